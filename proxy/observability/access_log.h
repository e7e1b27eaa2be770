// One access-log line per session or refused request, as JSON or text.
// Formatting is pure (a record in, a line out); writing goes through LogSink.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace obs {

struct AccessRecord {
    std::int64_t time_ms = 0;  // end of the session, Unix epoch milliseconds
    std::string request_id;
    std::string client;        // "ip:port"
    std::string proto = "http/1.1";  // the client's protocol: "http/1.1", "h2" or "h2c"
    std::string method;
    std::string host;
    std::string path;
    int status = 0;            // 101 for a tunnel, else the status sent
    std::string pool;
    std::string backend;       // "ip:port" or ""
    bool key_fallback = false; // the pool's hash key was missing: client address used
    std::int64_t connect_ms = 0;   // 0 also when no back-end connection was made (backend "")
    std::int64_t duration_ms = 0;
    std::uint64_t bytes_in = 0;     // from the client, head included
    std::uint64_t bytes_out = 0;    // to the client, head included
    std::uint64_t messages_in = 0;  // data messages client -> back end
    std::uint64_t messages_out = 0; // data messages back end -> client
    bool has_messages = true;       // false for a plain HTTP request: messages_* are left out
    int close_code = 0;
    std::string close_by;      // "client" | "backend" | "proxy" | ""
    std::string reason;
    std::string subject;       // "sub" of a verified token, "" without one
};

// Appends <s> as a JSON string body (RFC 8259 §7): quotes, backslashes and
// control bytes escaped; other bytes copied.
void append_json_escaped(std::string& out, std::string_view s);

// RFC 3339 UTC with milliseconds: "2026-11-25T20:00:00.123Z".
std::string format_time(std::int64_t epoch_ms);

// {"time":"...","request_id":"...",...} with every field, strings escaped.
std::string format_json(const AccessRecord& record);

// time=... request_id=... client=... ... reason="..." (same fields, one line;
// values with spaces or quotes are quoted and escaped).
std::string format_text(const AccessRecord& record);

}  // namespace obs
