#include "runtime/admin_route.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>
#include <vector>

namespace admin_route {

namespace {

bool is_read(std::string_view method) { return method == "GET" || method == "HEAD"; }

Route fail(int status, std::string error, const char* allow = "") {
    Route r;
    r.status = status;
    r.error = std::move(error);
    r.allow = allow;
    return r;
}

// A GET endpoint: 200, or 405 for another method.
Route read_endpoint(std::string_view method, Endpoint endpoint) {
    if (!is_read(method)) return fail(405, "method not allowed: use GET", "GET, HEAD");
    Route r;
    r.endpoint = endpoint;
    return r;
}

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> segments;
    std::size_t start = 1;  // path starts with '/'
    while (start <= path.size()) {
        std::size_t slash = path.find('/', start);
        if (slash == std::string_view::npos) slash = path.size();
        segments.push_back(path.substr(start, slash - start));
        start = slash + 1;
    }
    return segments;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// ?within=DURATION is the only parameter (of drain). Sets <r> to a 400 on
// anything else.
void parse_drain_query(std::string_view query, Route& r) {
    while (!query.empty()) {
        std::size_t amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (pair.empty()) continue;
        std::size_t eq = pair.find('=');
        std::string_view name = pair.substr(0, eq);
        std::string_view value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
        if (name != "within" || r.endpoint != Endpoint::Drain) {
            r = fail(400, "unknown parameter \"" + std::string(name) + "\"");
            return;
        }
        config::Duration within{};
        if (!config::parse_duration(value, within)) {
            r = fail(400, "within: expected a duration such as \"30s\" or \"500ms\", got \"" + std::string(value) + "\"");
            return;
        }
        r.within = within;
    }
}

}  // namespace

bool percent_decode(std::string_view segment, std::string& out) {
    out.clear();
    for (std::size_t i = 0; i < segment.size(); ++i) {
        char c = segment[i];
        if (c == '%') {
            if (i + 2 >= segment.size()) return false;  // needs two hex digits
            int hi = hex_value(segment[i + 1]);
            int lo = hex_value(segment[i + 2]);
            if (hi < 0 || lo < 0) return false;
            c = static_cast<char>(hi * 16 + lo);
            if (c == '/') return false;
            i += 2;
        }
        // Names are printable: a control byte, raw or escaped, names nothing.
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
        out += c;
    }
    return true;
}

Route route(std::string_view method, std::string_view path, std::string_view query) {
    if (path.empty() || path.front() != '/') return fail(404, "not found");
    if (path == "/") return read_endpoint(method, Endpoint::Dashboard);
    if (path == "/metrics") return read_endpoint(method, Endpoint::Metrics);
    if (path == "/healthz") return read_endpoint(method, Endpoint::Healthz);
    if (path == "/status") return read_endpoint(method, Endpoint::Status);
    const std::vector<std::string_view> segments = split_path(path);
    if (segments.size() == 2 && segments[0] == "dashboard" && !segments[1].empty()) {
        Route r = read_endpoint(method, Endpoint::Asset);
        if (r.status == 200) r.asset = std::string(segments[1]);
        return r;
    }
    // /pools/{pool}/backends/{id}/{drain|enable}
    if (segments.size() == 5 && segments[0] == "pools" && segments[2] == "backends" &&
        (segments[4] == "drain" || segments[4] == "enable")) {
        if (method != "POST") return fail(405, "method not allowed: use POST", "POST");
        Route r;
        r.endpoint = segments[4] == "drain" ? Endpoint::Drain : Endpoint::Enable;
        if (segments[1].empty() || segments[3].empty() || !percent_decode(segments[1], r.pool) ||
            !percent_decode(segments[3], r.backend)) {
            return fail(400, "malformed pool or back-end name in the path");
        }
        parse_drain_query(query, r);
        return r;
    }
    return fail(404, "not found");
}

bool bearer_matches(std::string_view authorization, std::string_view token) {
    constexpr std::string_view scheme = "bearer ";
    if (authorization.size() < scheme.size()) return false;
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        char c = authorization[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != scheme[i]) return false;
    }
    std::string_view given = authorization.substr(scheme.size());
    while (!given.empty() && given.front() == ' ') given.remove_prefix(1);
    while (!given.empty() && (given.back() == ' ' || given.back() == '\t')) given.remove_suffix(1);
    // Digests of both sides have one length whatever was sent, so neither
    // the compare's time nor an early length check says anything about the
    // secret's length or prefix.
    std::array<unsigned char, SHA256_DIGEST_LENGTH> a{}, b{};
    SHA256(reinterpret_cast<const unsigned char*>(given.data()), given.size(), a.data());
    SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), b.data());
    return !token.empty() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

const char* backend_state(bool up, bool draining, std::uint64_t active) {
    if (draining) return active == 0 ? "drained" : "draining";
    return up ? "up" : "down";
}

std::int64_t drain_offset_ms(std::size_t index, std::size_t count, std::int64_t window_ms) {
    if (window_ms <= 0 || count == 0 || index >= count) return 0;
    // 128-bit product: window_ms * (2 * index + 1) may exceed 64 bits for a
    // huge window and count.
    const unsigned __int128 numerator = static_cast<unsigned __int128>(window_ms) * (2 * index + 1);
    return static_cast<std::int64_t>(numerator / (2 * static_cast<unsigned __int128>(count)));
}

}  // namespace admin_route
