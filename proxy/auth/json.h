// Strict JSON for the documents wsgate reads from outside: JWT headers and
// claims sets, JWK Sets. Parsing is nlohmann-json's (RFC 8259 grammar, UTF-8
// validated, no comments or trailing commas); this wrapper drives it through
// its SAX interface to add what a security boundary needs and the library
// does not do by itself:
//  - a size bound checked before parsing;
//  - a nesting bound, so hostile input is refused rather than recursed into;
//  - duplicate member names refused (RFC 7519 §4 and RFC 7515 §4 allow it,
//    and silently keeping one of two "alg" or "sub" members is how
//    claim-smuggling bugs happen; nlohmann keeps the last one).
// Only <nlohmann/json_fwd.hpp> is included here: the full header is large and
// most of the code base that sees a jwt::Claims never parses JSON.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

namespace json {

using Value = nlohmann::json;

struct Limits {
    std::size_t max_bytes = 16384;  // input size
    std::size_t max_depth = 16;     // nested arrays and objects
};

struct ParseError {
    std::string reason;  // "syntax error ... at line 1, column 4", "duplicate member name \"alg\""
};

std::variant<Value, ParseError> parse(std::string_view text, const Limits& limits = {});

// The canonical text of a JSON number given as a double: an integer value of
// magnitude below 2^53 prints as an integer ("42", "1500" for 1.5e3, "0" for
// -0), anything else as the shortest text that reads back as the same double
// ("0.1", "1e+300").
std::string number_text(double value);

// A value as one line of text: a string as its unescaped UTF-8 text, a
// number in its canonical text, true/false as words, null as "null", an
// array or object as compact JSON.
std::string text_of(const Value& value);

}  // namespace json
