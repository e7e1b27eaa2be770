// Header look-ups shared by request and response heads.
#include <doctest/doctest.h>

#include "protocol/http1.h"

namespace {

http1::HeaderBlock block(std::initializer_list<http1::Header> headers) {
    http1::HeaderBlock b;
    b.headers = headers;
    return b;
}

}  // namespace

TEST_CASE("iequals compares ASCII case-insensitively and nothing else") {
    CHECK(http1::iequals("Content-Length", "content-length"));
    CHECK(http1::iequals("UPGRADE", "upgrade"));
    CHECK(http1::iequals("", ""));
    CHECK_FALSE(http1::iequals("Host", "Hos"));
    CHECK_FALSE(http1::iequals("Host", "Hosts"));
    CHECK_FALSE(http1::iequals("Host", "Post"));
    // Only A-Z fold: '@' (0x40) and '`' (0x60), '[' and '{' differ by 0x20 too.
    CHECK_FALSE(http1::iequals("@", "`"));
    CHECK_FALSE(http1::iequals("[", "{"));
    CHECK_FALSE(http1::iequals("\xc3\xa9", "\xc3\x89"));
}

TEST_CASE("find returns the first header with the name, case-insensitively") {
    const http1::HeaderBlock b = block({{"Host", "a"}, {"X-Key", "1"}, {"x-key", "2"}});
    REQUIRE(b.find("host") != nullptr);
    CHECK(b.find("host")->value == "a");
    REQUIRE(b.find("X-KEY") != nullptr);
    CHECK(b.find("X-KEY")->value == "1");
    CHECK(b.find("X-Ke") == nullptr);
    CHECK(b.find("") == nullptr);
    CHECK(block({}).find("Host") == nullptr);
}

TEST_CASE("has_token looks through comma-separated lists of every header with the name") {
    const http1::HeaderBlock b =
        block({{"Connection", "keep-alive,  Upgrade "}, {"Upgrade", "h2c"}, {"upgrade", "WebSocket"}});
    CHECK(b.has_token("connection", "upgrade"));
    CHECK(b.has_token("Connection", "KEEP-ALIVE"));
    CHECK(b.has_token("Upgrade", "websocket"));  // in the second Upgrade header
    CHECK(b.has_token("Upgrade", "h2c"));
    CHECK_FALSE(b.has_token("Connection", "close"));
    CHECK_FALSE(b.has_token("Connection", "upgrad"));     // whole items only
    CHECK_FALSE(b.has_token("Connection", "keep-alive,"));
    CHECK_FALSE(b.has_token("Sec-WebSocket-Protocol", "chat"));  // absent header
}

TEST_CASE("has_token ignores empty list items (RFC 9110 5.6.1)") {
    const http1::HeaderBlock b = block({{"Connection", ", ,Upgrade,"}, {"Empty", ""}});
    CHECK(b.has_token("Connection", "Upgrade"));
    CHECK_FALSE(b.has_token("Connection", ""));  // the empty items between commas are no items
    CHECK_FALSE(b.has_token("Empty", "x"));
    CHECK_FALSE(b.has_token("Empty", ""));  // an empty value holds no items
}

TEST_CASE("reason_phrase names the standard codes and calls the rest Unknown") {
    CHECK(http1::reason_phrase(101) == "Switching Protocols");
    CHECK(http1::reason_phrase(200) == "OK");
    CHECK(http1::reason_phrase(400) == "Bad Request");
    CHECK(http1::reason_phrase(414) == "URI Too Long");
    CHECK(http1::reason_phrase(426) == "Upgrade Required");
    CHECK(http1::reason_phrase(431) == "Request Header Fields Too Large");
    CHECK(http1::reason_phrase(502) == "Bad Gateway");
    CHECK(http1::reason_phrase(505) == "HTTP Version Not Supported");
    CHECK(http1::reason_phrase(299) == "Unknown");
    CHECK(http1::reason_phrase(0) == "Unknown");
    CHECK(http1::reason_phrase(-1) == "Unknown");
}

TEST_CASE("is_tchar: exactly the token characters of RFC 9110 section 5.6.2") {
    const std::string_view tchars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    int count = 0;
    for (int c = 0; c < 256; ++c) {
        const bool expected = tchars.find(static_cast<char>(c)) != std::string_view::npos;
        CHECK_MESSAGE(http1::is_tchar(static_cast<unsigned char>(c)) == expected, "byte ", c);
        count += http1::is_tchar(static_cast<unsigned char>(c)) ? 1 : 0;
    }
    CHECK(count == 77);
}
