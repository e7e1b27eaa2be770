#include "runtime/forward.h"

#include <fmt/format.h>

namespace forward {

namespace {

bool replaced_by_proxy(std::string_view name) {
    return http1::iequals(name, "x-forwarded-for") || http1::iequals(name, "x-forwarded-proto") ||
           http1::iequals(name, "x-forwarded-host") || http1::iequals(name, "x-request-id");
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
}

}  // namespace

static bool added_by_proxy(std::string_view name, const ClientFacts& facts) {
    if (facts.added) {
        for (const http1::Header& h : *facts.added) {
            if (http1::iequals(h.name, name)) return true;
        }
    }
    if (facts.stripped) {
        for (const std::string& stripped : *facts.stripped) {
            if (http1::iequals(stripped, name)) return true;
        }
    }
    return false;
}

std::string build_request_head(const http1::RequestHead& request, const ClientFacts& facts) {
    std::string out;
    out.reserve(512 + request.headers.size() * 48);
    out.append(request.method);
    out.push_back(' ');
    out.append(request.target);
    out.append(request.version_minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");

    std::string forwarded_for;
    for (const http1::Header& h : request.headers) {
        if (added_by_proxy(h.name, facts)) continue;
        if (!replaced_by_proxy(h.name)) {
            append_header(out, h.name, h.value);
        } else if (http1::iequals(h.name, "x-forwarded-for") && !h.value.empty()) {
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
