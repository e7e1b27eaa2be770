// HTTP/2 requests and responses mapped to and from the HTTP/1.1 heads the
// rest of wsgate speaks (RFC 9113 §8, RFC 8441). Pure: values in, a verdict
// or a head out. An HTTP/2 stream's request becomes the HTTP/1.1 request head
// a Session reads, so that route choice, pinning, the Origin and JWT checks,
// rate limits and X-Forwarded-* are the very code an HTTP/1.1 client meets;
// the Session's HTTP/1.1 response head becomes the stream's response.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/http1.h"

namespace h2map {

struct Field {
    std::string name;   // lowercase on the wire in HTTP/2 (RFC 9113 §8.2.1)
    std::string value;
};

// A request's header block as received on one stream.
struct Request {
    std::string method;     // :method
    std::string scheme;     // :scheme
    std::string authority;  // :authority
    std::string path;       // :path
    std::string protocol;   // :protocol (RFC 8441 extended CONNECT); empty when absent
    bool has_protocol = false;
    std::vector<Field> fields;  // the regular fields, in order
    // Set by add(): a pseudo-header that is unknown, repeated, or follows a
    // regular field (RFC 9113 §8.3) makes the request malformed.
    bool malformed = false;

    // Adds one field as the decoder delivers it.
    void add(std::string_view name, std::string_view value);
    // True for an RFC 8441 WebSocket request: CONNECT with :protocol.
    bool is_extended_connect() const { return method == "CONNECT" && has_protocol; }
};

struct Translation {
    bool ok = false;
    int status = 0;          // !ok: the answer for the stream (400, 501)
    std::string_view reason; // !ok: static text for the log
    bool websocket = false;  // an extended CONNECT for "websocket"
    std::string head;        // ok: the HTTP/1.1 request head, ending in an empty line
};

// The HTTP/1.1 request head for <request>. An extended CONNECT for
// "websocket" becomes "GET <path> HTTP/1.1" with Upgrade, Connection,
// Sec-WebSocket-Key <ws_key> (the proxy's own: RFC 8441 §5 has none) and
// Sec-WebSocket-Version (13 unless the client sent one); any other request
// keeps its method as HTTP/1.0, so that the response comes back delimited by
// Content-Length or by the end of the stream, never chunked. <body_length> is
// the body's length when there is one ("Content-Length: N"). :authority
// becomes Host; cookie fields are joined with "; " (RFC 9113 §8.2.3).
// Malformed requests get 400, a CONNECT without :protocol or for another
// protocol 501.
Translation to_http1(const Request& request, std::string_view ws_key, std::optional<std::uint64_t> body_length);

struct Response {
    int status = 0;
    std::vector<Field> fields;  // lowercase names, hop-by-hop fields removed
};

// The HTTP/2 response for the Session's HTTP/1.1 response head. A 101 for a
// WebSocket stream becomes 200 with only Sec-WebSocket-Protocol and
// Sec-WebSocket-Extensions (RFC 8441 §5); any other status keeps its
// end-to-end fields. Connection-specific fields (Connection and what it
// names, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade, TE) are
// dropped (RFC 9113 §8.2.2), and Content-Length where no body can follow.
Response from_http1(const http1::ResponseHead& head);

// A fresh Sec-WebSocket-Key: base64 of 16 bytes made of <high> and <low>.
std::string websocket_key(std::uint64_t high, std::uint64_t low);

}  // namespace h2map
