#include "auth/json.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <system_error>

namespace json {

namespace {

class Parser {
public:
    Parser(std::string_view text, const Limits& limits) : text_(text), limits_(limits) {}

    std::variant<Value, ParseError> run() {
        if (text_.size() > limits_.max_bytes) return ParseError{"document larger than the limit"};
        Value value;
        skip_space();
        if (!parse_value(value, 0)) return ParseError{error_};
        skip_space();
        if (pos_ != text_.size()) {
            fail("trailing characters");
            return ParseError{error_};
        }
        return value;
    }

private:
    bool fail(std::string_view what) {
        error_ = std::string(what) + " at byte " + std::to_string(pos_);
        return false;
    }

    bool at_end() const { return pos_ >= text_.size(); }
    char peek() const { return text_[pos_]; }

    // RFC 8259 §2: ws = space, tab, LF, CR.
    void skip_space() {
        while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
            ++pos_;
    }

    bool literal(std::string_view word) {
        if (text_.substr(pos_, word.size()) != word) return fail("invalid literal");
        pos_ += word.size();
        return true;
    }

    bool parse_value(Value& out, std::size_t depth) {
        if (at_end()) return fail("unexpected end");
        switch (peek()) {
        case '{':
            return parse_object(out, depth + 1);
        case '[':
            return parse_array(out, depth + 1);
        case '"':
            out.kind = Value::Kind::String;
            return parse_string(out.text);
        case 't':
            out.kind = Value::Kind::Bool;
            out.boolean = true;
            return literal("true");
        case 'f':
            out.kind = Value::Kind::Bool;
            out.boolean = false;
            return literal("false");
        case 'n':
            out.kind = Value::Kind::Null;
            return literal("null");
        default:
            return parse_number(out);
        }
    }

    bool parse_object(Value& out, std::size_t depth) {
        if (depth > limits_.max_depth) return fail("nesting deeper than the limit");
        out.kind = Value::Kind::Object;
        ++pos_;  // '{'
        skip_space();
        if (!at_end() && peek() == '}') {
            ++pos_;
            return true;
        }
        for (;;) {
            skip_space();
            if (at_end() || peek() != '"') return fail("expected a member name");
            std::size_t name_at = pos_;
            std::string name;
            if (!parse_string(name)) return false;
            if (out.find(name) != nullptr) {
                pos_ = name_at;
                return fail("duplicate member name");
            }
            skip_space();
            if (at_end() || peek() != ':') return fail("expected ':'");
            ++pos_;
            skip_space();
            Value value;
            if (!parse_value(value, depth)) return false;
            out.members.push_back(Member{std::move(name), std::move(value)});
            skip_space();
            if (at_end()) return fail("unterminated object");
            if (peek() == '}') {
                ++pos_;
                return true;
            }
            if (peek() != ',') return fail("expected ',' or '}'");
            ++pos_;
        }
    }

    bool parse_array(Value& out, std::size_t depth) {
        if (depth > limits_.max_depth) return fail("nesting deeper than the limit");
        out.kind = Value::Kind::Array;
        ++pos_;  // '['
        skip_space();
        if (!at_end() && peek() == ']') {
            ++pos_;
            return true;
        }
        for (;;) {
            skip_space();
            Value value;
            if (!parse_value(value, depth)) return false;
            out.items.push_back(std::move(value));
            skip_space();
            if (at_end()) return fail("unterminated array");
            if (peek() == ']') {
                ++pos_;
                return true;
            }
            if (peek() != ',') return fail("expected ',' or ']'");
            ++pos_;
        }
    }

    // RFC 8259 §6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
    bool parse_number(Value& out) {
        std::size_t start = pos_;
        auto digits = [&] {
            std::size_t from = pos_;
            while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
            return pos_ - from;
        };
        if (!at_end() && peek() == '-') ++pos_;
        if (at_end()) return fail("invalid number");
        if (peek() == '0') {
            ++pos_;
        } else if (digits() == 0) {
            return fail("unexpected character");
        }
        if (!at_end() && peek() == '.') {
            ++pos_;
            if (digits() == 0) return fail("invalid number");
        }
        if (!at_end() && (peek() == 'e' || peek() == 'E')) {
            ++pos_;
            if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
            if (digits() == 0) return fail("invalid number");
        }
        double value = 0;
        const char* first = text_.data() + start;
        const char* last = text_.data() + pos_;
        auto [end, ec] = std::from_chars(first, last, value);
        if (ec != std::errc() || end != last) {
            pos_ = start;
            return fail("number out of range");
        }
        out.kind = Value::Kind::Number;
        out.number = value;
        out.text = number_text(value);
        return true;
    }

    static void append_utf8(std::string& out, std::uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    bool hex4(std::uint32_t& out) {
        if (text_.size() - pos_ < 4) return fail("invalid \\u escape");
        out = 0;
        for (int i = 0; i < 4; ++i) {
            char c = text_[pos_ + i];
            std::uint32_t d;
            if (c >= '0' && c <= '9') d = static_cast<std::uint32_t>(c - '0');
            else if (c >= 'a' && c <= 'f') d = static_cast<std::uint32_t>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') d = static_cast<std::uint32_t>(c - 'A' + 10);
            else return fail("invalid \\u escape");
            out = out * 16 + d;
        }
        pos_ += 4;
        return true;
    }

    bool parse_escape(std::string& out) {
        ++pos_;  // '\\'
        if (at_end()) return fail("unterminated string");
        char c = peek();
        ++pos_;
        switch (c) {
        case '"': out += '"'; return true;
        case '\\': out += '\\'; return true;
        case '/': out += '/'; return true;
        case 'b': out += '\b'; return true;
        case 'f': out += '\f'; return true;
        case 'n': out += '\n'; return true;
        case 'r': out += '\r'; return true;
        case 't': out += '\t'; return true;
        case 'u': break;
        default: --pos_; return fail("invalid escape");
        }
        std::uint32_t cp = 0;
        if (!hex4(cp)) return false;
        // RFC 8259 §7: a character outside the BMP is a UTF-16 surrogate pair.
        if (cp >= 0xDC00 && cp <= 0xDFFF) return fail("unpaired surrogate");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") return fail("unpaired surrogate");
            pos_ += 2;
            std::uint32_t low = 0;
            if (!hex4(low)) return false;
            if (low < 0xDC00 || low > 0xDFFF) return fail("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        }
        append_utf8(out, cp);
        return true;
    }

    // One raw UTF-8 sequence (RFC 3629 §4, no overlongs, no surrogates).
    bool copy_utf8(std::string& out) {
        auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text_[pos_ + i]); };
        unsigned char lead = byte(0);
        std::size_t length;
        unsigned char low = 0x80, high = 0xBF;  // bounds of the second byte
        if (lead >= 0xC2 && lead <= 0xDF) length = 2;
        else if (lead == 0xE0) length = 3, low = 0xA0;
        else if (lead >= 0xE1 && lead <= 0xEC) length = 3;
        else if (lead == 0xED) length = 3, high = 0x9F;
        else if (lead >= 0xEE && lead <= 0xEF) length = 3;
        else if (lead == 0xF0) length = 4, low = 0x90;
        else if (lead >= 0xF1 && lead <= 0xF3) length = 4;
        else if (lead == 0xF4) length = 4, high = 0x8F;
        else return fail("invalid UTF-8");
        if (text_.size() - pos_ < length) return fail("invalid UTF-8");
        if (byte(1) < low || byte(1) > high) return fail("invalid UTF-8");
        for (std::size_t i = 2; i < length; ++i)
            if (byte(i) < 0x80 || byte(i) > 0xBF) return fail("invalid UTF-8");
        out.append(text_.substr(pos_, length));
        pos_ += length;
        return true;
    }

    bool parse_string(std::string& out) {
        ++pos_;  // '"'
        for (;;) {
            if (at_end()) return fail("unterminated string");
            auto c = static_cast<unsigned char>(peek());
            if (c == '"') {
                ++pos_;
                return true;
            }
            if (c == '\\') {
                if (!parse_escape(out)) return false;
            } else if (c < 0x20) {
                return fail("control character in string");
            } else if (c < 0x80) {
                out += static_cast<char>(c);
                ++pos_;
            } else if (!copy_utf8(out)) {
                return false;
            }
        }
    }

    std::string_view text_;
    Limits limits_;
    std::size_t pos_ = 0;
    std::string error_;
};

void serialize_string(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out += '"';
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (c < 0x20) {
                out += "\\u00";
                out += hex[c >> 4];
                out += hex[c & 0xF];
            } else {
                out += ch;
            }
        }
    }
    out += '"';
}

void serialize_into(std::string& out, const Value& v) {
    switch (v.kind) {
    case Value::Kind::Null: out += "null"; break;
    case Value::Kind::Bool: out += v.boolean ? "true" : "false"; break;
    case Value::Kind::Number: out += v.text; break;
    case Value::Kind::String: serialize_string(out, v.text); break;
    case Value::Kind::Array:
        out += '[';
        for (std::size_t i = 0; i < v.items.size(); ++i) {
            if (i) out += ',';
            serialize_into(out, v.items[i]);
        }
        out += ']';
        break;
    case Value::Kind::Object:
        out += '{';
        for (std::size_t i = 0; i < v.members.size(); ++i) {
            if (i) out += ',';
            serialize_string(out, v.members[i].name);
            out += ':';
            serialize_into(out, v.members[i].value);
        }
        out += '}';
        break;
    }
}

}  // namespace

const Value* Value::find(std::string_view name) const {
    for (const auto& member : members)
        if (member.name == name) return &member.value;
    return nullptr;
}

std::variant<Value, ParseError> parse(std::string_view text, const Limits& limits) {
    return Parser(text, limits).run();
}

std::string number_text(double value) {
    constexpr double exact_limit = 9007199254740992.0;  // 2^53
    if (std::trunc(value) == value && std::fabs(value) < exact_limit)
        return std::to_string(static_cast<std::int64_t>(value));
    char buffer[32];
    auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
    return std::string(buffer, ec == std::errc() ? end : buffer);
}

std::string serialize(const Value& value) {
    std::string out;
    serialize_into(out, value);
    return out;
}

}  // namespace json
