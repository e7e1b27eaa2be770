// Routing of admin requests, pure: a method, a path and a query in, the
// endpoint (or why none matches) out. The admin server (admin.cpp) and the
// server's handlers (admin_api.cpp) act on the result; the unit tests and a
// fuzz target drive this file alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"

namespace admin_route {

enum class Endpoint {
    Dashboard,  // GET /: the live page (index.html)
    Asset,      // GET /dashboard/<name>: a file of the page
    Metrics,    // GET /metrics
    Healthz,    // GET /healthz
    Status,     // GET /status
    Drain,      // POST /pools/{pool}/backends/{id}/drain[?within=30s]
    Enable,     // POST /pools/{pool}/backends/{id}/enable
};

// The outcome of routing. <status> is 200 when <endpoint> should run;
// otherwise 400 (bad query or escape), 404 (no such path) or 405 (the
// path exists, the method does not: answer with Allow: <allow>).
struct Route {
    int status = 200;
    Endpoint endpoint = Endpoint::Status;
    const char* allow = "";   // 405: the methods the path accepts
    std::string error;        // status != 200: why, for the JSON body
    std::string pool;         // Drain, Enable: percent-decoded
    std::string backend;      // Drain, Enable: the back end's id, percent-decoded
    std::string asset;        // Asset: the file name
    std::optional<config::Duration> within;  // Drain: ?within=, absent = server.drain_timeout
    bool write() const { return endpoint == Endpoint::Drain || endpoint == Endpoint::Enable; }
};

// Routes <method> <path>?<query> (path and query as the request parser split
// them). HEAD is accepted wherever GET is.
Route route(std::string_view method, std::string_view path, std::string_view query);

// Decodes %XX escapes of one path segment into <out>; false on a malformed
// escape, a decoded '/' (a segment names one thing) or a control byte (raw
// or escaped: names are printable).
bool percent_decode(std::string_view segment, std::string& out);

// Whether the Authorization header value <authorization> is
// "Bearer <token>" (scheme case-insensitive, RFC 6750 §2.1). The token is
// compared in constant time (CRYPTO_memcmp over equal lengths), so the
// response time tells nothing about how much of a guess was right.
bool bearer_matches(std::string_view authorization, std::string_view token);

// The state /status shows for a back end: "draining" or, once it holds no
// session, "drained" when the operator drained it; else "up" or "down".
const char* backend_state(bool up, bool draining, std::uint64_t active);

// When, in ms after a drain starts, the <index>-th of <count> sessions on a
// drained back end is closed: the middle of its slot when <window_ms> is cut
// into <count> equal slots, so closes are spread evenly and none waits the
// whole window. A window of 0 (or less) closes everything at once.
std::int64_t drain_offset_ms(std::size_t index, std::size_t count, std::int64_t window_ms);

}  // namespace admin_route
