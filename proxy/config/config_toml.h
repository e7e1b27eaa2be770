// The decode phase of configuration loading: TOML text -> a small tree of
// positioned values. This is the only interface to toml++ (config_toml.cpp is
// the only translation unit that includes it); the schema, validation and
// messages live in config.cpp and see nothing but this tree.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.h"

namespace config::toml_doc {

// 1-based line and column of a value or key in the source text (0 = unknown).
struct Position {
    unsigned line = 0;
    unsigned column = 0;
};

enum class Kind { Table, Array, String, Integer, Float, Boolean, Date, Time, DateTime };

// "a table", "an integer" ...: for "expected X, got Y" messages.
std::string_view describe(Kind kind);

struct Entry;

// One TOML value. Only the member matching <kind> is meaningful.
struct Node {
    Kind kind = Kind::Table;
    Position position;            // where the value starts ("[[pool]]" header for such tables)
    std::string string;           // String
    std::int64_t integer = 0;     // Integer
    double floating = 0.0;        // Float
    bool boolean = false;         // Boolean
    std::vector<Entry> entries;   // Table: in file order
    std::vector<Node> items;      // Array

    // The value of <key> in a table, or nullptr.
    const Node* find(std::string_view key) const;
};

struct Entry {
    std::string key;
    Position key_position;
    Node value;
};

// Parses <text> as TOML. A syntax error stops parsing: the result is then that
// one error (toml++'s description, at toml++'s position), with <name> as file.
std::variant<Node, Error> parse_toml(std::string_view text, const std::string& name);

}  // namespace config::toml_doc
