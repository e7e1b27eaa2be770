// h2map: HTTP/2 request header blocks to HTTP/1.1 heads and back
// (RFC 9113 §8, RFC 8441). The translated heads are fed to wsgate's own
// HTTP/1.1 parser and upgrade check, which is what a Session does with them.
#include <doctest/doctest.h>

#include <string>

#include "protocol/h2_mapping.h"
#include "protocol/http1.h"
#include "protocol/websocket.h"

namespace {

h2map::Request ws_request(std::string_view path = "/chat") {
    h2map::Request r;
    r.add(":method", "CONNECT");
    r.add(":protocol", "websocket");
    r.add(":scheme", "https");
    r.add(":path", path);
    r.add(":authority", "example.com");
    r.add("sec-websocket-version", "13");
    r.add("origin", "https://example.com");
    return r;
}

const std::string kKey = h2map::websocket_key(1, 2);

}  // namespace

TEST_CASE("h2map: websocket_key is 16 random bytes in base64") {
    CHECK(kKey.size() == 24);
    CHECK(kKey.substr(22) == "==");
    CHECK(h2map::websocket_key(1, 2) != h2map::websocket_key(1, 3));
}

TEST_CASE("h2map: an extended CONNECT becomes an HTTP/1.1 Upgrade the handshake accepts") {
    h2map::Request r = ws_request("/chat?room=1");
    r.add("sec-websocket-protocol", "chat, superchat");
    r.add("cookie", "a=1");
    r.add("cookie", "b=2");
    const h2map::Translation t = h2map::to_http1(r, kKey, std::nullopt);
    REQUIRE(t.ok);
    CHECK(t.websocket);
    CHECK(t.head ==
          "GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nsec-websocket-version: 13\r\n"
          "origin: https://example.com\r\nsec-websocket-protocol: chat, superchat\r\ncookie: a=1; b=2\r\n"
          "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + kKey + "\r\n\r\n");
    http1::RequestParser parser;
    http1::RequestHead head;
    const http1::Result parsed = parser.parse(t.head, head);
    REQUIRE(parsed.status == http1::Status::Done);
    CHECK(parsed.consumed == t.head.size());
    const ws::UpgradeCheck check = ws::check_upgrade_request(head);
    CHECK(check.is_upgrade);
    CHECK(check.ok);
    CHECK(check.key == kKey);
    CHECK(head.path == "/chat");
    CHECK(head.query == "room=1");
}

TEST_CASE("h2map: the version is added when the client left it out, a client key is dropped") {
    h2map::Request r;
    r.add(":method", "CONNECT");
    r.add(":protocol", "websocket");
    r.add(":scheme", "http");
    r.add(":path", "/");
    r.add(":authority", "h");
    r.add("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    const h2map::Translation t = h2map::to_http1(r, kKey, std::nullopt);
    REQUIRE(t.ok);
    CHECK(t.head.find("dGhlIHNhbXBsZSBub25jZQ==") == std::string::npos);
    CHECK(t.head.find("Sec-WebSocket-Version: 13\r\n") != std::string::npos);
}

TEST_CASE("h2map: plain requests go as HTTP/1.0 with the body's length") {
    h2map::Request r;
    r.add(":method", "POST");
    r.add(":scheme", "https");
    r.add(":path", "/socket.io/?EIO=4&transport=polling");
    r.add(":authority", "example.com:8443");
    r.add("content-type", "text/plain");
    r.add("content-length", "999");  // ours replaces it
    const h2map::Translation t = h2map::to_http1(r, kKey, 5);
    REQUIRE(t.ok);
    CHECK_FALSE(t.websocket);
    CHECK(t.head ==
          "POST /socket.io/?EIO=4&transport=polling HTTP/1.0\r\nHost: example.com:8443\r\n"
          "content-type: text/plain\r\nContent-Length: 5\r\n\r\n");
    http1::RequestParser parser;
    http1::RequestHead head;
    REQUIRE(parser.parse(t.head, head).status == http1::Status::Done);
    CHECK(head.content_length == 5u);
    CHECK_FALSE(ws::check_upgrade_request(head).is_upgrade);

    h2map::Request get;
    get.add(":method", "GET");
    get.add(":scheme", "http");
    get.add(":path", "/");
    const h2map::Translation g = h2map::to_http1(get, kKey, std::nullopt);
    REQUIRE(g.ok);
    CHECK(g.head == "GET / HTTP/1.0\r\n\r\n");
}

TEST_CASE("h2map: malformed requests get 400, unsupported CONNECTs 501") {
    struct Case {
        std::vector<std::pair<std::string, std::string>> fields;
        int status;
    };
    const Case cases[] = {
        {{{":method", "CONNECT"}, {":authority", "h:443"}}, 501},                       // classic CONNECT
        {{{":method", "CONNECT"}, {":protocol", "h2t"}, {":scheme", "https"}, {":path", "/"}, {":authority", "h"}}, 501},
        {{{":method", "CONNECT"}, {":protocol", "websocket"}, {":path", "/"}, {":authority", "h"}}, 400},  // no :scheme
        {{{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "https"}, {":authority", "h"}}, 400},  // no :path
        {{{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "https"}, {":path", "/"}}, 400},  // no :authority
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "no-slash"}}, 400},
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "/a b"}}, 400},
        {{{":method", "G T"}, {":scheme", "https"}, {":path", "/"}}, 400},
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {":path", "/x"}}, 400},  // repeated
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {":status", "200"}}, 400},  // response pseudo
        {{{":method", "GET"}, {"a", "b"}, {":scheme", "https"}, {":path", "/"}}, 400},  // pseudo after regular
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {"connection", "close"}}, 400},
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {"te", "gzip"}}, 400},
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {"Upper", "x"}}, 400},
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {"x", "a\r\nInjected: 1"}}, 400},
        {{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {":authority", "a\r\nb"}}, 400},
    };
    for (const Case& c : cases) {
        h2map::Request r;
        for (const auto& [name, value] : c.fields) r.add(name, value);
        const h2map::Translation t = h2map::to_http1(r, kKey, std::nullopt);
        CHECK_FALSE(t.ok);
        CHECK(t.status == c.status);
        CHECK(t.head.empty());
    }
    // "te: trailers" is the one TE allowed, and not forwarded.
    h2map::Request r;
    r.add(":method", "GET");
    r.add(":scheme", "https");
    r.add(":path", "/");
    r.add("te", "trailers");
    const h2map::Translation t = h2map::to_http1(r, kKey, std::nullopt);
    REQUIRE(t.ok);
    CHECK(t.head == "GET / HTTP/1.0\r\n\r\n");
}

TEST_CASE("h2map: responses: 101 becomes 200 with the subprotocol and extensions only") {
    const std::string bytes =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\nX-Other: 1\r\n\r\n";
    http1::ResponseParser parser;
    http1::ResponseHead head;
    REQUIRE(parser.parse(bytes, head).status == http1::Status::Done);
    const h2map::Response r = h2map::from_http1(head);
    CHECK(r.status == 200);
    REQUIRE(r.fields.size() == 2);
    CHECK(r.fields[0].name == "sec-websocket-protocol");
    CHECK(r.fields[0].value == "chat");
    CHECK(r.fields[1].name == "sec-websocket-extensions");
}

TEST_CASE("h2map: responses: a refusal keeps its status and end-to-end fields") {
    const std::string bytes =
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close, X-Hop\r\n"
        "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: s=1\r\n\r\n";
    http1::ResponseParser parser;
    http1::ResponseHead head;
    REQUIRE(parser.parse(bytes, head).status == http1::Status::Done);
    const h2map::Response r = h2map::from_http1(head);
    CHECK(r.status == 403);
    std::string names;
    for (const h2map::Field& f : r.fields) names += f.name + ";";
    // Connection, the field it names and Keep-Alive are connection-specific.
    CHECK(names == "content-type;content-length;set-cookie;");
}

TEST_CASE("h2map: responses: no Content-Length where no body follows") {
    http1::ResponseParser parser;
    http1::ResponseHead head;
    REQUIRE(parser.parse("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: b\r\n\r\n", head).status ==
            http1::Status::Done);
    const h2map::Response r = h2map::from_http1(head);
    REQUIRE(r.fields.size() == 1);
    CHECK(r.fields[0].name == "x-a");
}
