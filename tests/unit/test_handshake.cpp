// RFC 6455 §4 opening handshake: request checks, accept key, response checks.
#include <doctest/doctest.h>

#include <string>
#include <utility>
#include <vector>

#include "protocol/websocket.h"

namespace {

using Headers = std::vector<std::pair<std::string_view, std::string_view>>;

// The client handshake of RFC 6455 §1.3 with <changes> applied: a change
// with an empty value removes every header of that name, any other value
// replaces the first header of that name, or is appended when there is none.
http1::RequestHead sample_request(const Headers& changes = {}) {
    http1::RequestHead r;
    r.method = "GET";
    r.target = "/chat";
    r.path = "/chat";
    r.version_minor = 1;
    r.headers = {
        {"Host", "server.example.com"},
        {"Upgrade", "websocket"},
        {"Connection", "Upgrade"},
        {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
        {"Origin", "http://example.com"},
        {"Sec-WebSocket-Protocol", "chat, superchat"},
        {"Sec-WebSocket-Version", "13"},
    };
    for (const auto& [name, value] : changes) {
        if (value.empty()) {
            std::erase_if(r.headers, [&](const http1::Header& h) { return http1::iequals(h.name, name); });
            continue;
        }
        bool replaced = false;
        for (http1::Header& h : r.headers) {
            if (http1::iequals(h.name, name)) {
                h.value = value;
                replaced = true;
                break;
            }
        }
        if (!replaced) r.headers.push_back({name, value});
    }
    return r;
}

http1::ResponseHead sample_response() {
    http1::ResponseHead r;
    r.status = 101;
    r.reason = "Switching Protocols";
    r.headers = {
        {"Upgrade", "websocket"},
        {"Connection", "Upgrade"},
        {"Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="},
        {"Sec-WebSocket-Protocol", "chat"},
    };
    return r;
}

constexpr std::string_view kKey = "dGhlIHNhbXBsZSBub25jZQ==";

void check_rejected(const http1::RequestHead& r, int status, std::string_view reason) {
    const ws::UpgradeCheck c = ws::check_upgrade_request(r);
    CHECK(c.is_upgrade);
    CHECK_FALSE(c.ok);
    CHECK(c.http_status == status);
    CHECK(c.reason == reason);
    CHECK(c.needs_version_header == (status == 426));
    CHECK(c.key.empty());
}

}  // namespace

TEST_CASE("compute_accept matches RFC 6455 §1.3 and §4.2.2") {
    CHECK(ws::compute_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    // The example on MDN's Sec-WebSocket-Accept page.
    CHECK(ws::compute_accept("x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    CHECK(ws::compute_accept("").size() == 28);
}

TEST_CASE("the §1.3 client handshake is accepted") {
    const ws::UpgradeCheck c = ws::check_upgrade_request(sample_request());
    CHECK(c.is_upgrade);
    CHECK(c.ok);
    CHECK(c.http_status == 0);
    CHECK(c.reason.empty());
    CHECK_FALSE(c.needs_version_header);
    CHECK(c.key == kKey);
}

TEST_CASE("header names and tokens are case-insensitive, lists are comma-separated") {
    const ws::UpgradeCheck c = ws::check_upgrade_request(sample_request({
        {"upgrade", "h2c, WebSocket"},
        {"CONNECTION", "keep-alive,  UPGRADE "},
        {"sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA=="},
    }));
    CHECK(c.ok);
    CHECK(c.key == "AAAAAAAAAAAAAAAAAAAAAA==");
}

TEST_CASE("a request that does not ask for websocket is not an upgrade") {
    for (std::string_view upgrade : {std::string_view{}, std::string_view{"h2c"},
                                     std::string_view{"websocket2"}, std::string_view{"web socket"}}) {
        CAPTURE(upgrade);
        const ws::UpgradeCheck c = ws::check_upgrade_request(sample_request({{"Upgrade", upgrade}}));
        CHECK_FALSE(c.is_upgrade);
        CHECK_FALSE(c.ok);
        CHECK(c.http_status == 426);
        CHECK(c.reason == "not a websocket upgrade");
    }
    // Not an upgrade wins over every other defect.
    http1::RequestHead r = sample_request({{"Upgrade", ""}, {"Host", ""}});
    r.method = "POST";
    CHECK(ws::check_upgrade_request(r).reason == "not a websocket upgrade");
}

TEST_CASE("§4.2.1 rejections, in order") {
    SUBCASE("method other than GET -> 405") {
        for (std::string_view m : {"POST", "HEAD", "get", "CONNECT"}) {
            http1::RequestHead r = sample_request();
            r.method = m;
            CAPTURE(m);
            check_rejected(r, 405, "method not GET");
        }
    }
    SUBCASE("HTTP/1.0 -> 400") {
        http1::RequestHead r = sample_request();
        r.version_minor = 0;
        check_rejected(r, 400, "not HTTP/1.1");
    }
    SUBCASE("no Host -> 400") { check_rejected(sample_request({{"Host", ""}}), 400, "missing Host"); }
    SUBCASE("Connection without upgrade -> 400") {
        check_rejected(sample_request({{"Connection", ""}}), 400, "Connection lacks upgrade");
        check_rejected(sample_request({{"Connection", "keep-alive"}}), 400, "Connection lacks upgrade");
        check_rejected(sample_request({{"Connection", "upgrades"}}), 400, "Connection lacks upgrade");
    }
    SUBCASE("missing or other Sec-WebSocket-Version -> 426 with version header") {
        check_rejected(sample_request({{"Sec-WebSocket-Version", ""}}), 426,
                       "unsupported Sec-WebSocket-Version");
        for (std::string_view v : {"8", "12", "14", "13, 8", "013"}) {
            CAPTURE(v);
            check_rejected(sample_request({{"Sec-WebSocket-Version", v}}), 426,
                           "unsupported Sec-WebSocket-Version");
        }
    }
    SUBCASE("missing key -> 400") {
        check_rejected(sample_request({{"Sec-WebSocket-Key", ""}}), 400, "missing Sec-WebSocket-Key");
    }
    SUBCASE("duplicated key -> 400") {
        http1::RequestHead r = sample_request();
        r.headers.push_back({"sec-websocket-key", kKey});
        check_rejected(r, 400, "duplicate Sec-WebSocket-Key");
    }
    SUBCASE("key that is not base64 of 16 bytes -> 400") {
        for (std::string_view key : {
                 "dGhlIHNhbXBsZSBub25jZQ",      // no padding
                 "dGhlIHNhbXBsZSBub25jZQ=",     // short padding
                 "dGhlIHNhbXBsZSBub25jZQ===",   // long padding
                 "dGhlIHNhbXBsZSBub25jZQ-=",    // '-' is not in the alphabet
                 "dGhlIHNhbXBsZSBub25j*Q==",    // nor '*'
                 "dGhlIHNhbXBsZSBub25jZQAA",    // 18 bytes, no padding
                 "dGhlIHNhbXBsZSBub25jZQA=",    // 17 bytes
                 "dGhlIHNhbXBsZSBub25j",        // 15 bytes
                 "dGhlIHNhbXBsZSBub25jZSBhYg==", // 19 bytes
                 "dGhlIHNhbXBsZSBub25jZ Q=",    // embedded space
                 "==dGhlIHNhbXBsZSBub25jZQ",    // padding first
             }) {
            CAPTURE(key);
            check_rejected(sample_request({{"Sec-WebSocket-Key", key}}), 400,
                           "invalid Sec-WebSocket-Key");
        }
    }
    SUBCASE("earlier rules win over later ones") {
        http1::RequestHead r = sample_request({{"Host", ""}, {"Sec-WebSocket-Version", "8"}});
        r.version_minor = 0;
        check_rejected(r, 400, "not HTTP/1.1");
        check_rejected(sample_request({{"Connection", "close"}, {"Sec-WebSocket-Version", "8"}}), 400,
                       "Connection lacks upgrade");
        check_rejected(sample_request({{"Sec-WebSocket-Version", "8"}, {"Sec-WebSocket-Key", "x"}}), 426,
                       "unsupported Sec-WebSocket-Version");
    }
}

TEST_CASE("the §1.3 server handshake answers the §1.3 key") {
    const ws::ResponseCheck c = ws::check_upgrade_response(sample_response(), kKey);
    CHECK(c.ok);
    CHECK(c.reason.empty());
    CHECK_FALSE(c.deflate_negotiated);
}

TEST_CASE("back-end answers that do not complete the handshake (§4.1)") {
    auto check_bad = [](const http1::ResponseHead& r, std::string_view key, std::string_view reason) {
        const ws::ResponseCheck c = ws::check_upgrade_response(r, key);
        CHECK_FALSE(c.ok);
        CHECK(c.reason == reason);
    };
    http1::ResponseHead r = sample_response();
    r.status = 200;
    check_bad(r, kKey, "status not 101");
    r.status = 426;
    check_bad(r, kKey, "status not 101");

    r = sample_response();
    r.headers[0].value = "h2c";
    check_bad(r, kKey, "Upgrade lacks websocket");
    r.headers.erase(r.headers.begin());
    check_bad(r, kKey, "Upgrade lacks websocket");

    r = sample_response();
    r.headers[1].value = "keep-alive";
    check_bad(r, kKey, "Connection lacks upgrade");

    r = sample_response();
    r.headers.erase(r.headers.begin() + 2);
    check_bad(r, kKey, "missing Sec-WebSocket-Accept");

    r = sample_response();
    check_bad(r, "AAAAAAAAAAAAAAAAAAAAAA==", "Sec-WebSocket-Accept mismatch");
    // The comparison is exact: base64 is case-sensitive.
    r.headers[2].value = "S3PPLMBITXAQ9KYGZZHZRBK+XOO=";
    check_bad(r, kKey, "Sec-WebSocket-Accept mismatch");
}

TEST_CASE("permessage-deflate is detected in Sec-WebSocket-Extensions (§9.1)") {
    struct Case {
        std::vector<std::string_view> values;
        bool deflate;
    };
    const Case cases[] = {
        {{"permessage-deflate"}, true},
        {{"permessage-deflate; client_max_window_bits=10; server_no_context_takeover"}, true},
        {{"x-webkit-deflate-frame, Permessage-Deflate ;server_max_window_bits=12"}, true},
        {{"foo", "permessage-deflate"}, true},
        {{"x-webkit-deflate-frame"}, false},
        {{"permessage-deflate-2"}, false},
        {{"foo; permessage-deflate"}, false},  // a parameter, not an extension
        {{}, false},
    };
    for (const Case& tc : cases) {
        http1::ResponseHead r = sample_response();
        for (std::string_view v : tc.values) r.headers.push_back({"Sec-WebSocket-Extensions", v});
        const ws::ResponseCheck c = ws::check_upgrade_response(r, kKey);
        CAPTURE(tc.values.size());
        CHECK(c.ok);
        CHECK(c.deflate_negotiated == tc.deflate);
    }
}
