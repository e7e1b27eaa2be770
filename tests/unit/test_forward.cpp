#include <doctest/doctest.h>

#include "runtime/forward.h"

namespace {

http1::RequestHead upgrade_request(std::vector<http1::Header> extra = {}) {
    http1::RequestHead r;
    r.method = "GET";
    r.target = "/chat?room=1";
    r.path = "/chat";
    r.query = "room=1";
    r.headers = {{"Host", "example.com"},
                 {"Upgrade", "websocket"},
                 {"Connection", "Upgrade"},
                 {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                 {"Sec-WebSocket-Version", "13"}};
    for (auto& h : extra) r.headers.push_back(h);
    return r;
}

}  // namespace

TEST_CASE("forwarded head keeps the request line and headers in order and adds X-Forwarded-*") {
    auto head = forward::build_request_head(
        upgrade_request({{"Sec-WebSocket-Protocol", "chat, superchat"}, {"Cookie", "sid=abc"}}),
        {"10.1.2.3", "http", "0123456789abcdef0123456789abcdef"});
    CHECK(head ==
          "GET /chat?room=1 HTTP/1.1\r\n"
          "Host: example.com\r\n"
          "Upgrade: websocket\r\n"
          "Connection: Upgrade\r\n"
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          "Sec-WebSocket-Version: 13\r\n"
          "Sec-WebSocket-Protocol: chat, superchat\r\n"
          "Cookie: sid=abc\r\n"
          "X-Forwarded-For: 10.1.2.3\r\n"
          "X-Forwarded-Proto: http\r\n"
          "X-Forwarded-Host: example.com\r\n"
          "X-Request-Id: 0123456789abcdef0123456789abcdef\r\n"
          "\r\n");
}

TEST_CASE("X-Forwarded-For is appended to; client copies of the other proxy headers are replaced") {
    auto head = forward::build_request_head(
        upgrade_request({{"X-Forwarded-For", "1.1.1.1"},
                         {"x-forwarded-for", "2.2.2.2"},
                         {"X-Forwarded-Proto", "https"},
                         {"X-Forwarded-Host", "evil.example"},
                         {"X-Request-Id", "abc"}}),
        {"127.0.0.1", "http", "abc"});
    CHECK(head.find("X-Forwarded-For: 1.1.1.1, 2.2.2.2, 127.0.0.1\r\n") != std::string::npos);
    CHECK(head.find("X-Forwarded-Proto: https") == std::string::npos);
    CHECK(head.find("evil.example") == std::string::npos);
    CHECK(head.find("X-Forwarded-Host: example.com\r\n") != std::string::npos);
    CHECK(head.find("X-Request-Id: abc\r\n") != std::string::npos);
    // Exactly one of each proxy header.
    for (const char* name : {"X-Forwarded-For:", "X-Forwarded-Proto:", "X-Forwarded-Host:", "X-Request-Id:"}) {
        auto first = head.find(name);
        REQUIRE(first != std::string::npos);
        CHECK(head.find(name, first + 1) == std::string::npos);
    }
}

TEST_CASE("an HTTP/1.0 request keeps its version") {
    auto r = upgrade_request();
    r.version_minor = 0;
    auto head = forward::build_request_head(r, {"127.0.0.1", "http", "x"});
    CHECK(head.rfind("GET /chat?room=1 HTTP/1.0\r\n", 0) == 0);
}

TEST_CASE("error responses are short, closed and carry extra headers") {
    CHECK(forward::error_response(426, "not a websocket upgrade", "Upgrade: websocket\r\n") ==
          "HTTP/1.1 426 Upgrade Required\r\n"
          "Content-Type: text/plain; charset=utf-8\r\n"
          "Content-Length: 24\r\n"
          "Connection: close\r\n"
          "Upgrade: websocket\r\n"
          "\r\n"
          "not a websocket upgrade\n");
    auto r = forward::error_response(502, "");
    CHECK(r.find("HTTP/1.1 502 Bad Gateway\r\n") == 0);
    CHECK(r.find("Content-Length: 1\r\n") != std::string::npos);
}

TEST_CASE("request ids") {
    CHECK(forward::format_request_id(0x0123456789abcdefULL, 0xfedcba9876543210ULL) ==
          "0123456789abcdeffedcba9876543210");
    CHECK(forward::format_request_id(0, 1) == "00000000000000000000000000000001");
    CHECK(forward::acceptable_request_id("abc-123_XYZ.~"));
    CHECK(forward::acceptable_request_id(std::string(128, 'a')));
    CHECK_FALSE(forward::acceptable_request_id(std::string(129, 'a')));
    CHECK_FALSE(forward::acceptable_request_id(""));
    CHECK_FALSE(forward::acceptable_request_id("a b"));
    CHECK_FALSE(forward::acceptable_request_id("a\"b"));
    CHECK_FALSE(forward::acceptable_request_id("a\\b"));
    CHECK_FALSE(forward::acceptable_request_id("caf\xc3\xa9"));
}
