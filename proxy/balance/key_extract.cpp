// Session keys from a parsed request head. Every returned view points into
// <request> (or is <client_ip>), so the key lives as long as the head does.
#include "balance/chash.h"

namespace chash {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Splits <rest> at the first <sep>: returns the part before it and leaves the
// part after it in <rest> (empty when there is no <sep>).
std::string_view next_item(std::string_view& rest, char sep) {
    const std::size_t at = rest.find(sep);
    const std::string_view item = rest.substr(0, at);
    rest = at == std::string_view::npos ? std::string_view{} : rest.substr(at + 1);
    return item;
}

// The value of cookie <name> in one Cookie field value, "a=1; b=2"
// (RFC 6265 §4.2.1, parsed leniently: whitespace around names and values is
// ignored, pairs without '=' are skipped). A DQUOTE'd value loses its quotes
// (cookie-value = *cookie-octet / ( DQUOTE *cookie-octet DQUOTE ), §4.1.1).
// Returns false when the cookie is not there.
bool find_cookie(std::string_view field, std::string_view name, std::string_view& value) {
    while (!field.empty()) {
        std::string_view pair = next_item(field, ';');
        const std::size_t eq = pair.find('=');
        if (eq == std::string_view::npos) continue;
        if (trim(pair.substr(0, eq)) != name) continue;
        value = trim(pair.substr(eq + 1));
        if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
            value = value.substr(1, value.size() - 2);
        }
        return true;
    }
    return false;
}

// The value of parameter <name> in a query string "a=1&b=2", as sent; a bare
// "a" has an empty value. Returns false when the parameter is not there.
bool find_query(std::string_view query, std::string_view name, std::string_view& value) {
    while (!query.empty()) {
        std::string_view item = next_item(query, '&');
        const std::size_t eq = item.find('=');
        if (item.substr(0, eq) != name) continue;
        value = eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
        return true;
    }
    return false;
}

}  // namespace

// The first occurrence of a header, cookie or parameter decides: when its
// value is empty the request counts as lacking the key, even if a later
// occurrence has a value.
Key extract_key(const KeySpec& spec, const http1::RequestHead& request,
                std::string_view client_ip) {
    std::string_view value;
    switch (spec.source) {
        case KeySource::Ip: return {client_ip, false};
        case KeySource::Path: value = request.path; break;
        case KeySource::Header:
            if (const http1::Header* h = request.find(spec.name)) value = h->value;
            break;
        case KeySource::Cookie:
            for (const http1::Header& h : request.headers) {
                if (http1::iequals(h.name, "cookie") && find_cookie(h.value, spec.name, value)) break;
            }
            break;
        case KeySource::Query: find_query(request.query, spec.name, value); break;
        // A token claim is not in the request head: the session extracts it
        // after verifying the token; here it counts as missing.
        case KeySource::Claim: break;
    }
    if (value.empty()) return {client_ip, true};
    return {value, false};
}

}  // namespace chash
