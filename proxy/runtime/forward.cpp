#include "runtime/forward.h"

#include <fmt/format.h>

namespace forward {

namespace {

bool replaced_by_proxy(std::string_view name) {
    return http1::iequals(name, "x-forwarded-for") || http1::iequals(name, "x-forwarded-proto") ||
           http1::iequals(name, "x-forwarded-host") || http1::iequals(name, "x-request-id");
}

// Client headers the proxy sets itself from a verified token (<facts> may be
// null for responses): their client copies never go through.
bool set_from_token(std::string_view name, const ClientFacts* facts) {
    if (!facts) return false;
    if (facts->added) {
        for (const http1::Header& h : *facts->added) {
            if (http1::iequals(h.name, name)) return true;
        }
    }
    if (facts->stripped) {
        for (const std::string& stripped : *facts->stripped) {
            if (http1::iequals(stripped, name)) return true;
        }
    }
    return false;
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
}

// Appends the fields of <block> that survive a hop, but not the proxy's own.
void append_end_to_end(std::string& out, const http1::HeaderBlock& block, bool keep_content_length,
                       const ClientFacts* facts) {
    for (const http1::Header& h : block.headers) {
        if (replaced_by_proxy(h.name) || set_from_token(h.name, facts)) continue;
        if (http1::iequals(h.name, "content-length")) {
            if (keep_content_length) append_header(out, h.name, h.value);
            continue;
        }
        if (is_hop_by_hop(h.name, block)) continue;
        append_header(out, h.name, h.value);
    }
}

void append_proxy_headers(std::string& out, const http1::RequestHead& request, const ClientFacts& facts) {
    std::string forwarded_for;
    for (const http1::Header& h : request.headers) {
        if (http1::iequals(h.name, "x-forwarded-for") && !h.value.empty()) {
            if (!forwarded_for.empty()) forwarded_for.append(", ");
            forwarded_for.append(h.value);
        }
    }
    if (!forwarded_for.empty()) forwarded_for.append(", ");
    forwarded_for.append(facts.client_ip);
    append_header(out, "X-Forwarded-For", forwarded_for);
    append_header(out, "X-Forwarded-Proto", facts.proto);
    if (const http1::Header* host = request.find("host")) append_header(out, "X-Forwarded-Host", host->value);
    append_header(out, "X-Request-Id", facts.request_id);
    if (facts.added) {
        for (const http1::Header& h : *facts.added) append_header(out, h.name, h.value);
    }
}

void append_framing(std::string& out, const Body& body) {
    if (body.framing == Framing::Length) append_header(out, "Content-Length", std::to_string(body.length));
    if (body.framing == Framing::Chunked) append_header(out, "Transfer-Encoding", "chunked");
}

}  // namespace

Body request_body(const http1::RequestHead& request) {
    if (request.chunked) return {Framing::Chunked, 0};
    if (request.content_length) return {Framing::Length, *request.content_length};
    return {};
}

Body response_body(bool head_request, const http1::ResponseHead& response) {
    if (head_request || response.status < 200 || response.status == 204 || response.status == 304) return {};
    if (response.chunked) return {Framing::Chunked, 0};
    if (response.content_length) return {Framing::Length, *response.content_length};
    return {Framing::UntilClose, 0};
}

Body client_body(const Body& from_backend, int client_version_minor) {
    if (from_backend.framing == Framing::UntilClose && client_version_minor >= 1) return {Framing::Chunked, 0};
    if (from_backend.framing == Framing::Chunked && client_version_minor == 0) return {Framing::UntilClose, 0};
    return from_backend;
}

bool wants_keep_alive(const http1::RequestHead& request) {
    if (request.has_token("connection", "close")) return false;
    return request.version_minor >= 1 || request.has_token("connection", "keep-alive");
}

bool keeps_alive(const http1::ResponseHead& response) {
    if (response.has_token("connection", "close")) return false;
    return response.version_minor >= 1 || response.has_token("connection", "keep-alive");
}

bool is_hop_by_hop(std::string_view name, const http1::HeaderBlock& block) {
    static constexpr std::string_view kAlways[] = {"connection", "keep-alive",        "proxy-connection", "te",
                                                   "trailer",    "transfer-encoding", "upgrade",          "content-length"};
    for (std::string_view h : kAlways) {
        if (http1::iequals(name, h)) return true;
    }
    if (name.size() >= 6 && http1::iequals(name.substr(0, 6), "proxy-")) return true;
    return block.has_token("connection", name);
}

std::string build_http_request_head(const http1::RequestHead& request, const ClientFacts& facts, const Body& body) {
    std::string out;
    out.reserve(512 + request.headers.size() * 48);
    out.append(request.method);
    out.push_back(' ');
    out.append(request.target);
    out.append(" HTTP/1.1\r\n");
    append_end_to_end(out, request, false, &facts);
    append_proxy_headers(out, request, facts);
    // RFC 9110 §8.6: a user agent sends Content-Length: 0 for a POST or PUT
    // without a body; some servers wait for a body otherwise.
    if (body.framing == Framing::None && (request.method == "POST" || request.method == "PUT")) {
        append_header(out, "Content-Length", "0");
    }
    append_framing(out, body);
    out.append("\r\n");
    return out;
}

std::string build_response_head(const http1::ResponseHead& response, const ResponseFacts& facts) {
    std::string out;
    out.reserve(256 + response.headers.size() * 48);
    out.append(fmt::format("HTTP/1.1 {} ", response.status));
    out.append(response.reason);
    out.append("\r\n");
    const bool interim = response.status < 200;
    append_end_to_end(out, response, facts.body.framing == Framing::None && !interim, nullptr);
    // A 426 must name the protocols to upgrade to (RFC 9110 §15.5.22), and
    // the proxy does upgrade to websocket: that Upgrade field goes through.
    if (response.status == 426) {
        for (const http1::Header& h : response.headers) {
            if (http1::iequals(h.name, "upgrade")) append_header(out, h.name, h.value);
        }
    }
    if (interim) {
        out.append("\r\n");
        return out;
    }
    append_framing(out, facts.body);
    if (!facts.keep_alive) {
        append_header(out, "Connection", "close");
    } else if (facts.client_version_minor == 0) {
        append_header(out, "Connection", "keep-alive");
    }
    if (!facts.set_cookie.empty()) append_header(out, "Set-Cookie", facts.set_cookie);
    out.append("\r\n");
    return out;
}

std::string build_request_head(const http1::RequestHead& request, const ClientFacts& facts) {
    std::string out;
    out.reserve(512 + request.headers.size() * 48);
    out.append(request.method);
    out.push_back(' ');
    out.append(request.target);
    out.append(request.version_minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
    for (const http1::Header& h : request.headers) {
        if (!replaced_by_proxy(h.name) && !set_from_token(h.name, &facts)) append_header(out, h.name, h.value);
    }
    append_proxy_headers(out, request, facts);
    out.append("\r\n");
    return out;
}

std::string error_response(int status, std::string_view body, std::string_view extra_headers) {
    return fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n"
        "Connection: close\r\n{}\r\n{}\n",
        status, http1::reason_phrase(status), body.size() + 1, extra_headers, body);
}

bool acceptable_request_id(std::string_view id) {
    if (id.empty() || id.size() > 128) return false;
    for (char c : id) {
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\') return false;
    }
    return true;
}

bool origin_allowed(std::string_view origin, const std::vector<std::string>& patterns) {
    if (patterns.empty()) return true;
    for (const std::string& pattern : patterns) {
        if (http1::iequals(pattern, origin)) return true;
        std::size_t star = pattern.find("://*.");
        if (star == std::string::npos) continue;
        std::string_view scheme(pattern.data(), star + 3);            // "https://"
        std::string_view suffix = std::string_view(pattern).substr(star + 4);  // ".example.com[:port]"
        if (origin.size() <= scheme.size() + suffix.size()) continue;
        if (!http1::iequals(origin.substr(0, scheme.size()), scheme)) continue;
        if (!http1::iequals(origin.substr(origin.size() - suffix.size()), suffix)) continue;
        std::string_view host = origin.substr(scheme.size(), origin.size() - scheme.size() - suffix.size());
        bool clean = !host.empty() && host.front() != '.' &&
                     host.find_first_of(":/@") == std::string_view::npos;
        if (clean) return true;
    }
    return false;
}

std::string claim_header_name(std::string_view claim) {
    std::string name = "X-Auth-";
    bool start = true;
    for (char c : claim) {
        if (c == '_' || c == '-') {
            name += '-';
            start = true;
        } else {
            name += start && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
            start = false;
        }
    }
    return name;
}

std::string format_request_id(std::uint64_t high, std::uint64_t low) {
    return fmt::format("{:016x}{:016x}", high, low);
}

}  // namespace forward
