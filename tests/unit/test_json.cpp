#include <doctest/doctest.h>

#include <string>

#include "auth/json.h"

namespace {

json::Value parse_ok(std::string_view text) {
    auto r = json::parse(text);
    if (auto* e = std::get_if<json::ParseError>(&r)) FAIL(text << ": " << e->reason);
    return std::get<json::Value>(r);
}

std::string parse_error(std::string_view text, const json::Limits& limits = {}) {
    auto r = json::parse(text, limits);
    if (std::holds_alternative<json::Value>(r)) return "accepted";
    return std::get<json::ParseError>(r).reason;
}

}  // namespace

TEST_CASE("JSON values of every kind round-trip through serialize") {
    struct Case {
        const char* input;
        const char* compact;
    };
    const Case cases[] = {
        {"null", "null"},
        {" true ", "true"},
        {"false", "false"},
        {"0", "0"},
        {"-0", "0"},
        {"42", "42"},
        {"-17", "-17"},
        {"1.5e3", "1500"},
        {"1E2", "100"},
        {"0.1", "0.1"},
        {"-2.5", "-2.5"},
        {"1e-7", "1e-07"},
        {"1e300", "1e+300"},
        {"9007199254740991", "9007199254740991"},
        {"9007199254740993", "9007199254740992"},  // nearest double, then 2^53 is not "small"
        {"\"\"", "\"\""},
        {"\"a\\\"b\\\\c\\/d\"", "\"a\\\"b\\\\c/d\""},
        {"\"\\b\\f\\n\\r\\t\"", "\"\\b\\f\\n\\r\\t\""},
        {"\"\\u0001\\u001F\"", "\"\\u0001\\u001f\""},
        {"\"\\u00e9\\u20AC\"", "\"\xc3\xa9\xe2\x82\xac\""},
        {"\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\""},  // surrogate pair -> U+1F600
        {"\"\xc3\xa9\xf0\x9f\x98\x80\"", "\"\xc3\xa9\xf0\x9f\x98\x80\""},  // raw UTF-8 kept
        {"[]", "[]"},
        {"[ 1 , [2, [3]] ]", "[1,[2,[3]]]"},
        {"{}", "{}"},
        {"{ \"a\" : 1, \"b\": {\"c\": [true, null]} }", "{\"a\":1,\"b\":{\"c\":[true,null]}}"},
        {"\t\r\n{\"x\":\"y\"}\n", "{\"x\":\"y\"}"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.input);
        CHECK(json::serialize(parse_ok(c.input)) == c.compact);
    }
}

TEST_CASE("JSON numbers keep the double and a canonical text") {
    auto v = parse_ok("{\"sub\": 42, \"exp\": 1300819380.5, \"neg\": -1e2}");
    REQUIRE(v.kind == json::Value::Kind::Object);
    REQUIRE(v.find("sub") != nullptr);
    CHECK(v.find("sub")->number == 42);
    CHECK(v.find("sub")->text == "42");
    CHECK(v.find("exp")->number == 1300819380.5);
    CHECK(v.find("exp")->text == "1300819380.5");
    CHECK(v.find("neg")->text == "-100");
    CHECK(v.find("missing") == nullptr);
    CHECK(json::number_text(-0.0) == "0");
    CHECK(json::number_text(0.25) == "0.25");
    CHECK(json::number_text(9007199254740992.0) == "9007199254740992");
    CHECK(json::number_text(1e21) == "1e+21");
}

TEST_CASE("JSON object members keep input order") {
    auto v = parse_ok("{\"z\":1,\"a\":2,\"m\":3}");
    REQUIRE(v.members.size() == 3);
    CHECK(v.members[0].name == "z");
    CHECK(v.members[1].name == "a");
    CHECK(v.members[2].name == "m");
}

TEST_CASE("JSON parser refuses everything outside RFC 8259, with the byte offset") {
    struct Case {
        const char* input;
        const char* reason;
    };
    const Case cases[] = {
        {"", "unexpected end at byte 0"},
        {"   ", "unexpected end at byte 3"},
        {"nul", "invalid literal at byte 0"},
        {"True", "unexpected character at byte 0"},
        {"{} {}", "trailing characters at byte 3"},
        {"01", "trailing characters at byte 1"},
        {"+1", "unexpected character at byte 0"},
        {"-", "invalid number at byte 1"},
        {"1.", "invalid number at byte 2"},
        {".5", "unexpected character at byte 0"},
        {"1e", "invalid number at byte 2"},
        {"1e+", "invalid number at byte 3"},
        {"NaN", "unexpected character at byte 0"},
        {"1e400", "number out of range at byte 0"},
        {"[1,]", "unexpected character at byte 3"},
        {"[1 2]", "expected ',' or ']' at byte 3"},
        {"[1", "unterminated array at byte 2"},
        {"{\"a\":1,}", "expected a member name at byte 7"},
        {"{\"a\" 1}", "expected ':' at byte 5"},
        {"{\"a\":1 \"b\":2}", "expected ',' or '}' at byte 7"},
        {"{\"a\":1", "unterminated object at byte 6"},
        {"{a:1}", "expected a member name at byte 1"},
        {"{'a':1}", "expected a member name at byte 1"},
        {"{\"a\":1,\"a\":2}", "duplicate member name at byte 7"},
        {"\"abc", "unterminated string at byte 4"},
        {"\"a\nb\"", "control character in string at byte 2"},
        {"\"\\x\"", "invalid escape at byte 2"},
        {"\"\\u12\"", "invalid \\u escape at byte 3"},
        {"\"\\u12G4\"", "invalid \\u escape at byte 3"},
        {"\"\\udc00\"", "unpaired surrogate at byte 7"},
        {"\"\\ud800\"", "unpaired surrogate at byte 7"},
        {"\"\\ud800\\u0041\"", "unpaired surrogate at byte 13"},
        {"\"\xc0\xaf\"", "invalid UTF-8 at byte 1"},          // overlong '/'
        {"\"\xe0\x80\xaf\"", "invalid UTF-8 at byte 1"},      // overlong
        {"\"\xed\xa0\x80\"", "invalid UTF-8 at byte 1"},      // encoded surrogate
        {"\"\xf4\x90\x80\x80\"", "invalid UTF-8 at byte 1"},  // above U+10FFFF
        {"\"\xff\"", "invalid UTF-8 at byte 1"},
        {"\"\xc3\"", "invalid UTF-8 at byte 1"},
        {"\"\xe2\x82\"", "invalid UTF-8 at byte 1"},
        {"\xc3\xa9", "unexpected character at byte 0"},
        {"/* c */ 1", "unexpected character at byte 0"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.input);
        CHECK(parse_error(c.input) == c.reason);
    }
    CHECK(parse_error(std::string_view("\"a\0b\"", 5)) == "control character in string at byte 2");
}

TEST_CASE("JSON size and depth limits") {
    json::Limits limits{.max_bytes = 10, .max_depth = 3};
    CHECK(parse_error("[[[1]]]", limits) == "accepted");
    CHECK(parse_error("[[[[1]]]]", limits) == "nesting deeper than the limit at byte 3");
    CHECK(parse_error("{\"a\":{\"b\":{\"c\":{}}}}", json::Limits{.max_bytes = 100, .max_depth = 3}) ==
          "nesting deeper than the limit at byte 15");
    CHECK(parse_error("\"0123456789\"", limits) == "document larger than the limit");
    CHECK(parse_error("\"01234567\"", limits) == "accepted");
    // Deep hostile input is refused, not recursed into.
    std::string deep(100000, '[');
    CHECK(parse_error(deep, json::Limits{.max_bytes = 200000, .max_depth = 16}) ==
          "nesting deeper than the limit at byte 16");
}
