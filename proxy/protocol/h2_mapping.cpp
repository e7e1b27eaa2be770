#include "protocol/h2_mapping.h"

#include <array>
#include <cstring>

#include <openssl/evp.h>

namespace h2map {

namespace {

bool is_token(std::string_view text) {
    if (text.empty()) return false;
    for (unsigned char c : text) {
        if (!http1::is_tchar(c)) return false;
    }
    return true;
}

// A field value safe to put on an HTTP/1.1 header line: no CR, LF or NUL
// (RFC 9113 §8.2.1), which would split the line.
bool is_safe_value(std::string_view value) {
    for (unsigned char c : value) {
        if (c == '\r' || c == '\n' || c == '\0') return false;
    }
    return true;
}

// A field name as HTTP/2 allows it: a token without uppercase letters.
bool is_field_name(std::string_view name) {
    if (!is_token(name)) return false;
    for (unsigned char c : name) {
        if (c >= 'A' && c <= 'Z') return false;
    }
    return true;
}

// Fields that have no place in an HTTP/2 request or that the translation
// states itself (RFC 9113 §8.2.2; Host comes from :authority, the body's
// length and the WebSocket key from the proxy).
bool dropped_request_field(std::string_view name) {
    static constexpr std::string_view kNames[] = {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
        "host",       "content-length", "sec-websocket-key", "http2-settings"};
    for (std::string_view n : kNames) {
        if (name == n) return true;
    }
    return false;
}

Translation refuse(int status, std::string_view reason) {
    Translation t;
    t.status = status;
    t.reason = reason;
    return t;
}

}  // namespace

void Request::add(std::string_view name, std::string_view value) {
    if (!name.empty() && name.front() == ':') {
        std::string* slot = nullptr;
        if (name == ":method") slot = &method;
        else if (name == ":scheme") slot = &scheme;
        else if (name == ":authority") slot = &authority;
        else if (name == ":path") slot = &path;
        else if (name == ":protocol") slot = &protocol;
        if (slot == nullptr || !slot->empty() || !fields.empty() || (slot == &protocol && has_protocol)) {
            malformed = true;
            return;
        }
        if (slot == &protocol) has_protocol = true;
        slot->assign(value);
        return;
    }
    fields.push_back(Field{std::string(name), std::string(value)});
}

Translation to_http1(const Request& request, std::string_view ws_key, std::optional<std::uint64_t> body_length) {
    if (request.malformed) return refuse(400, "malformed pseudo-header fields");
    if (!is_token(request.method)) return refuse(400, "invalid :method");
    const bool websocket = request.is_extended_connect();
    if (request.method == "CONNECT" && !request.has_protocol) return refuse(501, "CONNECT without :protocol");
    if (websocket && !http1::iequals(request.protocol, "websocket")) return refuse(501, "unsupported :protocol");
    // RFC 9113 §8.3.1, RFC 8441 §4: every request but CONNECT has :scheme
    // and :path; an extended CONNECT has both too, and :authority.
    if (request.scheme.empty() || request.path.empty()) return refuse(400, "missing :scheme or :path");
    if (websocket && request.authority.empty()) return refuse(400, "missing :authority");
    if (request.path.front() != '/' && !(request.path == "*" && request.method == "OPTIONS")) {
        return refuse(400, "invalid :path");
    }
    for (char c : request.path) {
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return refuse(400, "invalid :path");
    }
    if (!is_safe_value(request.authority) || request.authority.find_first_of(" \t") != std::string::npos) {
        return refuse(400, "invalid :authority");
    }

    std::string head;
    head.reserve(256);
    if (websocket) {
        head.append("GET ").append(request.path).append(" HTTP/1.1\r\n");
    } else {
        head.append(request.method).append(" ").append(request.path).append(" HTTP/1.0\r\n");
    }
    if (!request.authority.empty()) head.append("Host: ").append(request.authority).append("\r\n");
    std::string cookies;
    bool version_sent = false;
    for (const Field& field : request.fields) {
        if (!is_field_name(field.name)) return refuse(400, "invalid field name");
        if (!is_safe_value(field.value)) return refuse(400, "invalid field value");
        if (dropped_request_field(field.name)) {
            // RFC 9113 §8.2.2: "TE" may be present only as "trailers"; the
            // other connection-specific fields make the request malformed.
            if (field.name == "te" && field.value != "trailers") return refuse(400, "connection-specific field");
            if (field.name == "connection" || field.name == "keep-alive" || field.name == "proxy-connection" ||
                field.name == "transfer-encoding" || field.name == "upgrade") {
                return refuse(400, "connection-specific field");
            }
            continue;
        }
        if (field.name == "cookie") {
            if (!cookies.empty()) cookies.append("; ");
            cookies.append(field.value);
            continue;
        }
        if (field.name == "sec-websocket-version") version_sent = true;
        head.append(field.name).append(": ").append(field.value).append("\r\n");
    }
    if (!cookies.empty()) head.append("cookie: ").append(cookies).append("\r\n");
    if (websocket) {
        head.append("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ").append(ws_key).append("\r\n");
        if (!version_sent) head.append("Sec-WebSocket-Version: 13\r\n");
    } else if (body_length) {
        head.append("Content-Length: ").append(std::to_string(*body_length)).append("\r\n");
    }
    head.append("\r\n");
    Translation t;
    t.ok = true;
    t.websocket = websocket;
    t.head = std::move(head);
    return t;
}

Response from_http1(const http1::ResponseHead& head) {
    Response out;
    const bool upgraded = head.status == 101;
    out.status = upgraded ? 200 : head.status;
    const bool no_body = head.status < 200 || head.status == 204 || head.status == 304;
    for (const http1::Header& h : head.headers) {
        std::string name(h.name);
        for (char& c : name) {
            if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        }
        if (upgraded) {
            if (name == "sec-websocket-protocol" || name == "sec-websocket-extensions") {
                out.fields.push_back(Field{std::move(name), std::string(h.value)});
            }
            continue;
        }
        if (name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
            name == "transfer-encoding" || name == "upgrade" || name == "te" || name == "trailer" ||
            head.has_token("connection", name)) {
            continue;
        }
        if (name == "content-length" && no_body && head.status != 304) continue;
        out.fields.push_back(Field{std::move(name), std::string(h.value)});
    }
    return out;
}

std::string websocket_key(std::uint64_t high, std::uint64_t low) {
    std::array<unsigned char, 16> bytes{};
    std::memcpy(bytes.data(), &high, 8);
    std::memcpy(bytes.data() + 8, &low, 8);
    unsigned char text[32] = {};
    const int n = EVP_EncodeBlock(text, bytes.data(), static_cast<int>(bytes.size()));
    return std::string(reinterpret_cast<const char*>(text), static_cast<std::size_t>(n));
}

}  // namespace h2map
