// A small, strict RFC 8259 JSON parser for JWT headers and claims sets:
// the whole grammar, UTF-8 validated, bounded in size and depth, duplicate
// member names refused (RFC 7519 §4 and RFC 7515 §4 allow rejecting them,
// and silently picking one is how claim-smuggling bugs happen). No
// extensions: no comments, no trailing commas, no NaN, no single quotes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace json {

struct Member;

struct Value {
    enum class Kind { Null, Bool, Number, String, Array, Object };

    Kind kind = Kind::Null;
    bool boolean = false;   // Kind::Bool
    double number = 0;      // Kind::Number
    // Kind::String: the unescaped UTF-8 text. Kind::Number: the canonical
    // text of the number (see number_text()).
    std::string text;
    std::vector<Value> items;                             // Kind::Array
    std::vector<Member> members;  // Kind::Object, in input order

    // The member named <name> of an object, or nullptr.
    const Value* find(std::string_view name) const;
};

// One object member, defined after Value: a std::vector may name an
// incomplete element type, but std::pair<std::string, Value> inside Value
// needs Value complete (clang rejects it).
struct Member {
    std::string name;
    Value value;
};

struct Limits {
    std::size_t max_bytes = 16384;  // input size
    std::size_t max_depth = 16;     // nested arrays and objects
};

struct ParseError {
    std::string reason;  // "unterminated string at byte 17"
};

std::variant<Value, ParseError> parse(std::string_view text, const Limits& limits = {});

// The canonical text of a JSON number: an integer value of magnitude below
// 2^53 prints as an integer ("42", "1500" for 1.5e3, "0" for -0), anything
// else as the shortest text that reads back as the same double ("0.1",
// "1e+300").
std::string number_text(double value);

// Compact serialisation (no whitespace; strings re-escaped, non-ASCII kept
// as UTF-8; numbers in their canonical text).
std::string serialize(const Value& value);

}  // namespace json
