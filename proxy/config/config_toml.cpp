// The one translation unit that includes toml++: converts its DOM into the
// positioned tree of config_toml.h.
#include "config/config_toml.h"

#include <algorithm>
#include <tuple>

#include <toml++/toml.h>

namespace config::toml_doc {

namespace {

Position position_of(const toml::source_region& region) {
    return {region.begin.line, region.begin.column};
}

// toml++ bounds nesting depth while parsing (TOML_MAX_NESTED_VALUES), so this
// recursion is bounded too.
Node convert(const toml::node& in) {
    Node out;
    out.position = position_of(in.source());
    switch (in.type()) {
        case toml::node_type::table: {
            out.kind = Kind::Table;
            for (const auto& [key, value] : *in.as_table()) {
                out.entries.push_back(
                    Entry{std::string(key.str()), position_of(key.source()), convert(value)});
            }
            // toml::table is ordered by key; present keys in file order instead.
            std::stable_sort(out.entries.begin(), out.entries.end(), [](const Entry& a, const Entry& b) {
                return std::tie(a.key_position.line, a.key_position.column) <
                       std::tie(b.key_position.line, b.key_position.column);
            });
            break;
        }
        case toml::node_type::array:
            out.kind = Kind::Array;
            for (const toml::node& item : *in.as_array()) out.items.push_back(convert(item));
            break;
        case toml::node_type::string:
            out.kind = Kind::String;
            out.string = in.as_string()->get();
            break;
        case toml::node_type::integer:
            out.kind = Kind::Integer;
            out.integer = in.as_integer()->get();
            break;
        case toml::node_type::floating_point:
            out.kind = Kind::Float;
            out.floating = in.as_floating_point()->get();
            break;
        case toml::node_type::boolean:
            out.kind = Kind::Boolean;
            out.boolean = in.as_boolean()->get();
            break;
        case toml::node_type::date: out.kind = Kind::Date; break;
        case toml::node_type::time: out.kind = Kind::Time; break;
        case toml::node_type::date_time: out.kind = Kind::DateTime; break;
        case toml::node_type::none: break;
    }
    return out;
}

}  // namespace

std::string_view describe(Kind kind) {
    switch (kind) {
        case Kind::Table: return "a table";
        case Kind::Array: return "an array";
        case Kind::String: return "a string";
        case Kind::Integer: return "an integer";
        case Kind::Float: return "a float";
        case Kind::Boolean: return "a boolean";
        case Kind::Date: return "a date";
        case Kind::Time: return "a time";
        case Kind::DateTime: return "a date-time";
    }
    return "a value";
}

const Node* Node::find(std::string_view key) const {
    for (const Entry& entry : entries) {
        if (entry.key == key) return &entry.value;
    }
    return nullptr;
}

std::variant<Node, Error> parse_toml(std::string_view text, const std::string& name) {
    try {
        toml::table root = toml::parse(text, std::string_view(name));
        return convert(root);
    } catch (const toml::parse_error& e) {
        const Position at = position_of(e.source());
        return Error{name, at.line, at.column, std::string(e.description())};
    }
}

}  // namespace config::toml_doc
