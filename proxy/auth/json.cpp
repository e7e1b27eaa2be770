#include "auth/json.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <system_error>
#include <vector>

namespace json {

namespace {

// Builds the document like nlohmann's own DOM parser, with the limits and
// the duplicate check of the header comment. Returning false from a
// callback stops the parse at once.
class StrictBuilder {
public:
    explicit StrictBuilder(std::size_t max_depth) : max_depth_(max_depth) {}

    bool null() { return put(nullptr); }
    bool boolean(bool v) { return put(v); }
    bool number_integer(Value::number_integer_t v) { return put(v); }
    bool number_unsigned(Value::number_unsigned_t v) { return put(v); }
    bool number_float(Value::number_float_t v, const std::string&) { return put(v); }
    bool string(std::string& v) { return put(std::move(v)); }
    bool binary(Value::binary_t&) { return fail("binary values are not JSON"); }

    bool start_object(std::size_t) { return open(Value::object()); }
    bool start_array(std::size_t) { return open(Value::array()); }
    bool end_object() { return close(); }
    bool end_array() { return close(); }

    bool key(std::string& name) {
        Value& object = *stack_.back();
        if (object.contains(name)) return fail("duplicate member name \"" + name + "\"");
        slot_ = &object[name];
        return true;
    }

    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
        // "[json.exception.parse_error.101] parse error at line 1, ...": the
        // bracketed id says nothing to an operator.
        std::string_view what = e.what();
        if (auto bracket = what.find("] "); bracket != std::string_view::npos) what.remove_prefix(bracket + 2);
        return fail(std::string(what));
    }

    Value root_;
    std::string error_;

private:
    bool fail(std::string reason) {
        if (error_.empty()) error_ = std::move(reason);
        return false;
    }

    // Stores <v> where the grammar says it goes: the root, the end of the
    // open array, or the member named by the last key().
    Value* place(Value&& v) {
        if (stack_.empty()) {
            root_ = std::move(v);
            return &root_;
        }
        Value& top = *stack_.back();
        if (top.is_array()) {
            top.push_back(std::move(v));
            return &top.back();
        }
        *slot_ = std::move(v);
        return slot_;
    }

    template <typename T>
    bool put(T&& v) {
        place(Value(std::forward<T>(v)));
        return true;
    }

    bool open(Value&& container) {
        if (stack_.size() >= max_depth_) return fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
        stack_.push_back(place(std::move(container)));
        return true;
    }

    bool close() {
        stack_.pop_back();
        return true;
    }

    std::size_t max_depth_;
    std::vector<Value*> stack_;  // open arrays and objects; pointers stay valid: only the top grows
    Value* slot_ = nullptr;      // the member value the last key() created
};

}  // namespace

std::variant<Value, ParseError> parse(std::string_view text, const Limits& limits) {
    if (text.size() > limits.max_bytes) return ParseError{"document larger than the limit"};
    // nlohmann's lexer takes a NUL byte for the end of input, so "{}\0junk"
    // would pass as "{}". NUL is valid nowhere in JSON text (inside a
    // string it must be escaped), so refuse it outright.
    if (auto nul = text.find('\0'); nul != std::string_view::npos)
        return ParseError{"NUL byte at byte " + std::to_string(nul)};
    StrictBuilder builder(limits.max_depth);
    // strict = true: trailing characters are an error; comments stay errors.
    if (!Value::sax_parse(text, &builder, nlohmann::detail::input_format_t::json, true, false))
        return ParseError{builder.error_.empty() ? "invalid JSON" : builder.error_};
    return std::move(builder.root_);
}

std::string number_text(double value) {
    constexpr double exact_limit = 9007199254740992.0;  // 2^53
    if (std::trunc(value) == value && std::fabs(value) < exact_limit)
        return std::to_string(static_cast<std::int64_t>(value));
    char buffer[32];
    auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
    return std::string(buffer, ec == std::errc() ? end : buffer);
}

std::string text_of(const Value& value) {
    switch (value.type()) {
        case Value::value_t::string: return value.get_ref<const std::string&>();
        case Value::value_t::number_integer: return std::to_string(value.get<std::int64_t>());
        case Value::value_t::number_unsigned: return std::to_string(value.get<std::uint64_t>());
        case Value::value_t::number_float: return number_text(value.get<double>());
        default: return value.dump();
    }
}

}  // namespace json
