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

// ---- Plain HTTP/1.1 proxying (RFC 9112, RFC 9110 §7.6) ------------------------

// How a message body is delimited (RFC 9112 §6.3).
enum class Framing {
    None,        // no body
    Length,      // exactly `length` bytes
    Chunked,     // the chunked transfer coding
    UntilClose,  // the bytes until the sender closes (responses only)
};

struct Body {
    Framing framing = Framing::None;
    std::uint64_t length = 0;  // Length only
};

// The request's body (§6.3 rules 4-7): chunked, Content-Length, or none. The
// head parser has already rejected every ambiguous combination.
Body request_body(const http1::RequestHead& request);

// The response's body as its sender frames it (§6.3 rules 1, 2, 4-8): none
// for a HEAD request and for 1xx, 204 and 304; else chunked, Content-Length,
// or until the back end closes.
Body response_body(bool head_request, const http1::ResponseHead& response);

// How the proxy frames that body towards a client speaking HTTP/1.<minor>:
// a close-delimited body to an HTTP/1.1 client is re-framed as chunked so its
// connection can stay open; a chunked body to an HTTP/1.0 client, which
// cannot decode it (§7), is sent decoded and delimited by our close.
Body client_body(const Body& from_backend, int client_version_minor);

// Persistence (§9.3): HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with
// "Connection: keep-alive".
bool wants_keep_alive(const http1::RequestHead& request);
bool keeps_alive(const http1::ResponseHead& response);

// A header the proxy does not forward (RFC 9110 §7.6.1): Connection and
// every field it names, Keep-Alive, Proxy-Connection, TE, Trailer,
// Transfer-Encoding, Upgrade and Proxy-*; and Content-Length, since the proxy
// states the framing itself. <block> is the message holding <name>.
bool is_hop_by_hop(std::string_view name, const http1::HeaderBlock& block);

// The head sent to a back end for a request that is not an upgrade: the
// request line as HTTP/1.1 (the connection is the proxy's: kept open for
// reuse), the end-to-end headers in order, the proxy headers as in
// build_request_head, and the framing of <body> ("Content-Length: N" or
// "Transfer-Encoding: chunked"; a body-less POST or PUT gets Content-Length: 0).
std::string build_http_request_head(const http1::RequestHead& request, const ClientFacts& facts, const Body& body);

struct ResponseFacts {
    Body body;                    // how the proxy frames the body to the client (client_body)
    bool keep_alive = true;       // false: "Connection: close"
    int client_version_minor = 1; // an HTTP/1.0 client kept alive gets "Connection: keep-alive"
    std::string_view set_cookie;  // a Set-Cookie value to add, or empty
};

// The head relayed to the client: "HTTP/1.1 <status> <reason>", the
// end-to-end headers in order, then the framing of <facts.body>
// ("Content-Length: N", "Transfer-Encoding: chunked"; with no body the back
// end's Content-Length stays as sent, since for HEAD and 304 it describes the
// representation), Connection as <facts> say (none on a 1xx) and Set-Cookie.
// The Upgrade field of a 426 is kept: it names what the client may upgrade to.
std::string build_response_head(const http1::ResponseHead& response, const ResponseFacts& facts);

}  // namespace forward
