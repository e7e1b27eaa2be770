// Session keys from a parsed request head. Every returned view points into
// <request> (or is <client_ip>), so the key lives as long as the head does.
#include "balance/chash.h"
#include "protocol/cookie.h"

namespace chash {

namespace {

// Splits <rest> at the first <sep>: returns the part before it and leaves the
// part after it in <rest> (empty when there is no <sep>).
std::string_view next_item(std::string_view& rest, char sep) {
    const std::size_t at = rest.find(sep);
    const std::string_view item = rest.substr(0, at);
    rest = at == std::string_view::npos ? std::string_view{} : rest.substr(at + 1);
    return item;
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
            value = cookie::find(request, spec.name).value_or(std::string_view{});
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
