// auth/json: nlohmann-json driven through its SAX interface with wsgate's
// limits. The grammar is the library's; what is tested here is that the
// strictness a security boundary needs holds: duplicate names, depth, size,
// UTF-8, and nothing outside RFC 8259.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

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

TEST_CASE("JSON values of every kind parse and serialise compactly") {
    struct Case {
        const char* input;
        const char* compact;
    };
    const Case cases[] = {
        {"null", "null"},
        {" true ", "true"},
        {"false", "false"},
        {"0", "0"},
        {"42", "42"},
        {"-17", "-17"},
        {"9007199254740993", "9007199254740993"},  // integers stay exact
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
        CHECK(parse_ok(c.input).dump() == c.compact);
    }
}

TEST_CASE("JSON text_of renders claims as one line of text") {
    auto v = parse_ok(
        "{\"sub\": 42, \"exp\": 1300819380.5, \"neg\": -1e2, \"f\": 1.5e3, \"s\": \"x\\ty\", \"b\": true,"
        " \"n\": null, \"a\": [1, \"two\"], \"o\": {\"k\": 0.25}, \"big\": 1e300, \"u\": 18446744073709551615}");
    CHECK(json::text_of(v["sub"]) == "42");
    CHECK(json::text_of(v["exp"]) == "1300819380.5");
    CHECK(json::text_of(v["neg"]) == "-100");
    CHECK(json::text_of(v["f"]) == "1500");
    CHECK(json::text_of(v["s"]) == "x\ty");
    CHECK(json::text_of(v["b"]) == "true");
    CHECK(json::text_of(v["n"]) == "null");
    CHECK(json::text_of(v["a"]) == "[1,\"two\"]");
    CHECK(json::text_of(v["o"]) == "{\"k\":0.25}");
    CHECK(json::text_of(v["big"]) == "1e+300");
    CHECK(json::text_of(v["u"]) == "18446744073709551615");
    CHECK(json::number_text(-0.0) == "0");
    CHECK(json::number_text(0.25) == "0.25");
    CHECK(json::number_text(9007199254740992.0) == "9007199254740992");
    CHECK(json::number_text(1e21) == "1e+21");
}

TEST_CASE("JSON duplicate member names are refused at every depth") {
    CHECK(parse_error("{\"a\":1,\"a\":2}") == "duplicate member name \"a\"");
    CHECK(parse_error("{\"alg\":\"RS256\",\"x\":{},\"alg\":\"none\"}") == "duplicate member name \"alg\"");
    CHECK(parse_error("[{\"k\":{\"z\":1,\"z\":1}}]") == "duplicate member name \"z\"");
    // The same name in sibling objects is not a duplicate.
    CHECK(parse_error("[{\"a\":1},{\"a\":2}]") == "accepted");
    CHECK(parse_error("{\"a\":{\"a\":1}}") == "accepted");
    // Names compare after unescaping: "\u0061" is "a".
    CHECK(parse_error("{\"a\":1,\"\\u0061\":2}") == "duplicate member name \"a\"");
}

TEST_CASE("JSON parser refuses everything outside RFC 8259, including bad UTF-8") {
    const char* refused[] = {
        "", "   ", "nul", "True", "{} {}", "01", "+1", "-", "1.", ".5", "1e", "1e+", "NaN", "Infinity", "1e400",
        "[1,]", "[1 2]", "[1", "{\"a\":1,}", "{\"a\" 1}", "{\"a\":1 \"b\":2}", "{\"a\":1", "{a:1}", "{'a':1}",
        "\"abc", "\"a\nb\"", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"",
        "\"\\udc00\"",        // lone low surrogate
        "\"\\ud800\"",        // lone high surrogate
        "\"\\ud800\\u0041\"",  // high surrogate + non-surrogate
        "\"\xc0\xaf\"",          // overlong '/'
        "\"\xe0\x80\xaf\"",      // overlong
        "\"\xed\xa0\x80\"",      // encoded surrogate
        "\"\xf4\x90\x80\x80\"",  // above U+10FFFF
        "\"\xff\"", "\"\xc3\"", "\"\xe2\x82\"", "\xc3\xa9",
        "/* c */ 1", "1 // c", "[1] ,",
    };
    for (const char* input : refused) {
        CAPTURE(input);
        const std::string reason = parse_error(input);
        CHECK(reason != "accepted");
        CHECK(reason.find("json.exception") == std::string::npos);  // the library's id is cut off
        CHECK_FALSE(reason.empty());
    }
    CHECK(parse_error(std::string_view("\"a\0b\"", 5)) != "accepted");
    // nlohmann alone would stop at a NUL and accept "1": the wrapper refuses it.
    CHECK(parse_error(std::string_view("1\0", 2)) == "NUL byte at byte 1");
    CHECK(parse_error(std::string_view("{}\0{\"a\":1}", 10)) == "NUL byte at byte 2");
    // The reason locates the problem for the log.
    CHECK(parse_error("[1,]").find("column 4") != std::string::npos);
    CHECK(parse_error("\"\xff\"").find("UTF-8") != std::string::npos);
}

TEST_CASE("JSON size and depth limits") {
    json::Limits limits{.max_bytes = 10, .max_depth = 3};
    CHECK(parse_error("[[[1]]]", limits) == "accepted");
    CHECK(parse_error("[[[[1]]]]", limits) == "nesting deeper than 3 levels");
    CHECK(parse_error("{\"a\":{\"b\":{\"c\":{}}}}", json::Limits{.max_bytes = 100, .max_depth = 3}) ==
          "nesting deeper than 3 levels");
    CHECK(parse_error("[{},[],{}]", json::Limits{.max_bytes = 100, .max_depth = 2}) == "accepted");
    CHECK(parse_error("\"0123456789\"", limits) == "document larger than the limit");
    CHECK(parse_error("\"01234567\"", limits) == "accepted");
    // Deep hostile input is refused, not recursed into (the SAX parser
    // itself keeps an explicit stack; the builder stops at the bound).
    std::string deep(100000, '[');
    CHECK(parse_error(deep, json::Limits{.max_bytes = 200000, .max_depth = 16}) == "nesting deeper than 16 levels");
    std::string deep_objects;
    for (int i = 0; i < 1000; ++i) deep_objects += "{\"a\":";
    CHECK(parse_error(deep_objects, json::Limits{.max_bytes = 200000, .max_depth = 16}) ==
          "nesting deeper than 16 levels");
}

TEST_CASE("JSON parse -> dump -> parse is stable") {
    const char* docs[] = {"{\"a\":[1,2.5,-3e-7,\"\\u00e9\"],\"b\":{\"c\":null}}", "[0.1,1e300,123456789012345678]",
                          "\"\xf0\x9f\x98\x80\""};
    for (const char* doc : docs) {
        CAPTURE(doc);
        const std::string once = parse_ok(doc).dump();
        CHECK(parse_ok(once).dump() == once);
    }
}
