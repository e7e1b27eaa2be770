#include "observability/access_log.h"

#include <ctime>

#include <fmt/format.h>

namespace obs {

// Control bytes are escaped too: the parser already rejected them in heads,
// but paths may still carry anything printable.
void append_json_escaped(std::string& out, std::string_view s) {
    for (char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
                } else {
                    out += c;
                }
        }
    }
}

namespace {

void add_string(std::string& out, std::string_view key, std::string_view value) {
    out += ",\"";
    out += key;
    out += "\":\"";
    append_json_escaped(out, value);
    out += '"';
}

template <typename Int>
void add_number(std::string& out, std::string_view key, Int value) {
    fmt::format_to(std::back_inserter(out), ",\"{}\":{}", key, value);
}

// A text value: bare when it is a non-empty run of safe characters, else
// quoted with the JSON escapes.
void add_text(std::string& out, std::string_view key, std::string_view value) {
    out += ' ';
    out += key;
    out += '=';
    bool bare = !value.empty();
    for (char c : value) {
        if (c <= ' ' || c == '"' || c == '\\' || static_cast<unsigned char>(c) >= 0x7f) bare = false;
    }
    if (bare) {
        out += value;
    } else {
        out += '"';
        append_json_escaped(out, value);
        out += '"';
    }
}

}  // namespace

std::string format_time(std::int64_t epoch_ms) {
    std::time_t seconds = static_cast<std::time_t>(epoch_ms / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, epoch_ms % 1000);
}

std::string format_json(const AccessRecord& r) {
    std::string out;
    out.reserve(512);
    out += "{\"time\":\"";
    out += format_time(r.time_ms);
    out += '"';
    add_string(out, "request_id", r.request_id);
    add_string(out, "client", r.client);
    add_string(out, "proto", r.proto);
    add_string(out, "method", r.method);
    add_string(out, "host", r.host);
    add_string(out, "path", r.path);
    add_number(out, "status", r.status);
    add_string(out, "pool", r.pool);
    add_string(out, "backend", r.backend);
    out += r.key_fallback ? ",\"key_fallback\":true" : ",\"key_fallback\":false";
    add_number(out, "connect_ms", r.connect_ms);
    add_number(out, "duration_ms", r.duration_ms);
    add_number(out, "bytes_in", r.bytes_in);
    add_number(out, "bytes_out", r.bytes_out);
    if (r.has_messages) {
        add_number(out, "messages_in", r.messages_in);
        add_number(out, "messages_out", r.messages_out);
    }
    add_number(out, "close_code", r.close_code);
    add_string(out, "close_by", r.close_by);
    add_string(out, "reason", r.reason);
    add_string(out, "subject", r.subject);
    out += '}';
    return out;
}

std::string format_text(const AccessRecord& r) {
    std::string out = "time=" + format_time(r.time_ms);
    add_text(out, "request_id", r.request_id);
    add_text(out, "client", r.client);
    add_text(out, "proto", r.proto);
    add_text(out, "method", r.method);
    add_text(out, "host", r.host);
    add_text(out, "path", r.path);
    add_text(out, "status", std::to_string(r.status));
    add_text(out, "pool", r.pool);
    add_text(out, "backend", r.backend);
    add_text(out, "key_fallback", r.key_fallback ? "true" : "false");
    add_text(out, "connect_ms", std::to_string(r.connect_ms));
    add_text(out, "duration_ms", std::to_string(r.duration_ms));
    add_text(out, "bytes_in", std::to_string(r.bytes_in));
    add_text(out, "bytes_out", std::to_string(r.bytes_out));
    if (r.has_messages) {
        add_text(out, "messages_in", std::to_string(r.messages_in));
        add_text(out, "messages_out", std::to_string(r.messages_out));
    }
    add_text(out, "close_code", std::to_string(r.close_code));
    add_text(out, "close_by", r.close_by);
    add_text(out, "reason", r.reason);
    add_text(out, "subject", r.subject);
    return out;
}

}  // namespace obs
