// Pure helpers for the handshake path: the request head sent to a back end,
// the short responses the proxy answers with itself, request ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/http1.h"

namespace forward {

struct ClientFacts {
    std::string_view client_ip;   // the address the proxy sees (or trusts)
    std::string_view proto;       // "http" or "https"
    std::string_view request_id;  // kept from the client or generated
    // Headers the proxy adds (e.g. X-Auth-Sub from a verified token); client
    // headers of the same names are dropped so they cannot be forged.
    const std::vector<http1::Header>* added = nullptr;
    // Further names whose client copies are dropped even when the proxy
    // adds no such header this time (a claim absent from this token).
    const std::vector<std::string>* stripped = nullptr;
};

// The head forwarded to a back end: the request line and every header as the
// client sent them (order kept), except that X-Forwarded-For gets
// <client_ip> appended, and X-Forwarded-Proto, X-Forwarded-Host (the Host)
// and X-Request-Id are set by the proxy (client copies replaced).
std::string build_request_head(const http1::RequestHead& request, const ClientFacts& facts);

// "HTTP/1.1 <status> <phrase>" with Content-Type text/plain, Content-Length,
// Connection: close, <extra_headers> (each "Name: value\r\n"), and <body>
// followed by a newline.
std::string error_response(int status, std::string_view body, std::string_view extra_headers = {});

// A client-supplied X-Request-Id is kept when it is 1..128 visible ASCII
// characters without separators that would break a log line.
bool acceptable_request_id(std::string_view id);

// True when <origin> (an Origin header value) is allowed by <patterns>:
// equal ignoring case, or a pattern "scheme://*.suffix" matching the same
// scheme and a host of one or more labels before ".suffix" (port included in
// the comparison). An empty pattern list allows everything.
bool origin_allowed(std::string_view origin, const std::vector<std::string>& patterns);

// "X-Auth-" + <claim> with each word capitalised and '_' as '-':
// "sub" -> "X-Auth-Sub", "email_verified" -> "X-Auth-Email-Verified".
std::string claim_header_name(std::string_view claim);

// 32 lowercase hex digits from two 64-bit random values.
std::string format_request_id(std::uint64_t high, std::uint64_t low);

}  // namespace forward
