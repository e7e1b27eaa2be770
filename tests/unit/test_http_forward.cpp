// The pure parts of plain HTTP proxying: body framing, persistence,
// hop-by-hop removal, the heads sent each way, sticky-cookie tokens.
#include <doctest/doctest.h>

#include <string>

#include "balance/chash.h"
#include "balance/sticky.h"
#include "runtime/forward.h"

namespace {

// Parsed heads keep views into their text: both live together.
struct Request {
    std::string text;
    http1::RequestHead head;
};
struct Response {
    std::string text;
    http1::ResponseHead head;
};

Request request(std::string text) {
    Request r{std::move(text), {}};
    http1::RequestParser parser;
    http1::Result result = parser.parse(r.text, r.head);
    REQUIRE(result.status == http1::Status::Done);
    return r;
}

Response response(std::string text) {
    Response r{std::move(text), {}};
    http1::ResponseParser parser;
    http1::Result result = parser.parse(r.text, r.head);
    REQUIRE(result.status == http1::Status::Done);
    return r;
}

const forward::ClientFacts kFacts{"10.0.0.7", "http", "0123456789abcdef0123456789abcdef"};

}  // namespace

TEST_CASE("request bodies: chunked, Content-Length or none") {
    auto chunked = request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    CHECK(forward::request_body(chunked.head).framing == forward::Framing::Chunked);
    auto sized = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n");
    CHECK(forward::request_body(sized.head).framing == forward::Framing::Length);
    CHECK(forward::request_body(sized.head).length == 42);
    auto none = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(forward::request_body(none.head).framing == forward::Framing::None);
}

TEST_CASE("response bodies follow RFC 9112 6.3") {
    auto sized = response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
    CHECK(forward::response_body(false, sized.head).framing == forward::Framing::Length);
    CHECK(forward::response_body(false, sized.head).length == 5);
    CHECK(forward::response_body(true, sized.head).framing == forward::Framing::None);
    for (const char* status : {"100 Continue", "204 No Content", "304 Not Modified", "103 Early Hints"}) {
        auto r = response(std::string("HTTP/1.1 ") + status + "\r\nContent-Length: 5\r\n\r\n");
        CHECK(forward::response_body(false, r.head).framing == forward::Framing::None);
    }
    auto chunked = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    CHECK(forward::response_body(false, chunked.head).framing == forward::Framing::Chunked);
    auto until_close = response("HTTP/1.1 200 OK\r\n\r\n");
    CHECK(forward::response_body(false, until_close.head).framing == forward::Framing::UntilClose);
    // A transfer coding not ending in chunked: the body runs until close.
    auto gzip = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    CHECK(forward::response_body(false, gzip.head).framing == forward::Framing::UntilClose);
}

TEST_CASE("client framing: re-frame close-delimited bodies for HTTP/1.1, decode chunked for HTTP/1.0") {
    using forward::Framing;
    CHECK(forward::client_body({Framing::UntilClose, 0}, 1).framing == Framing::Chunked);
    CHECK(forward::client_body({Framing::UntilClose, 0}, 0).framing == Framing::UntilClose);
    CHECK(forward::client_body({Framing::Chunked, 0}, 0).framing == Framing::UntilClose);
    CHECK(forward::client_body({Framing::Chunked, 0}, 1).framing == Framing::Chunked);
    CHECK(forward::client_body({Framing::Length, 9}, 0).length == 9);
    CHECK(forward::client_body({Framing::None, 0}, 0).framing == Framing::None);
}

TEST_CASE("persistence: HTTP/1.1 by default, HTTP/1.0 on request") {
    CHECK(forward::wants_keep_alive(request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").head));
    CHECK_FALSE(forward::wants_keep_alive(request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").head));
    CHECK_FALSE(forward::wants_keep_alive(request("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n").head));
    CHECK_FALSE(forward::wants_keep_alive(request("GET / HTTP/1.0\r\n\r\n").head));
    CHECK(forward::wants_keep_alive(request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").head));
    CHECK(forward::keeps_alive(response("HTTP/1.1 200 OK\r\n\r\n").head));
    CHECK_FALSE(forward::keeps_alive(response("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").head));
    CHECK_FALSE(forward::keeps_alive(response("HTTP/1.0 200 OK\r\n\r\n").head));
    CHECK(forward::keeps_alive(response("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").head));
}

TEST_CASE("hop-by-hop headers: the fixed list, Proxy-* and the names Connection lists") {
    auto r = request("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n\r\n");
    for (const char* name : {"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding",
                             "Upgrade", "Content-Length", "Proxy-Authorization", "proxy-anything", "x-secret"}) {
        INFO(name);
        CHECK(forward::is_hop_by_hop(name, r.head));
    }
    for (const char* name : {"Host", "Cookie", "Expect", "Accept", "Proxy", "X-Secrets", "Authorization"}) {
        INFO(name);
        CHECK_FALSE(forward::is_hop_by_hop(name, r.head));
    }
}

TEST_CASE("request head to the back end: hop-by-hop removed, proxy headers added, body re-framed") {
    auto r = request(
        "POST /upload?x=1 HTTP/1.1\r\n"
        "Host: example.com\r\n"
        "Connection: keep-alive, X-Hop\r\n"
        "X-Hop: secret\r\n"
        "Keep-Alive: timeout=5\r\n"
        "TE: trailers\r\n"
        "Trailer: Expires\r\n"
        "Upgrade: h2c\r\n"
        "Proxy-Authorization: Basic Zm9v\r\n"
        "Proxy-Connection: keep-alive\r\n"
        "Transfer-Encoding: chunked\r\n"
        "Expect: 100-continue\r\n"
        "X-Forwarded-For: 1.1.1.1\r\n"
        "X-Request-Id: mine\r\n"
        "Cookie: a=b\r\n"
        "\r\n");
    std::string head = forward::build_http_request_head(r.head, kFacts, forward::request_body(r.head));
    CHECK(head ==
          "POST /upload?x=1 HTTP/1.1\r\n"
          "Host: example.com\r\n"
          "Expect: 100-continue\r\n"
          "Cookie: a=b\r\n"
          "X-Forwarded-For: 1.1.1.1, 10.0.0.7\r\n"
          "X-Forwarded-Proto: http\r\n"
          "X-Forwarded-Host: example.com\r\n"
          "X-Request-Id: 0123456789abcdef0123456789abcdef\r\n"
          "Transfer-Encoding: chunked\r\n"
          "\r\n");
}

TEST_CASE("request head: Content-Length restated, HTTP/1.0 sent as HTTP/1.1, empty POST gets a length") {
    auto sized = request("PUT /x HTTP/1.0\r\nContent-Length: 007\r\n\r\n");
    std::string head = forward::build_http_request_head(sized.head, kFacts, forward::request_body(sized.head));
    CHECK(head.starts_with("PUT /x HTTP/1.1\r\n"));
    CHECK(head.find("Content-Length: 7\r\n") != std::string::npos);
    CHECK(head.find("007") == std::string::npos);
    auto empty = request("POST /x HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(forward::build_http_request_head(empty.head, kFacts, {}).find("Content-Length: 0\r\n") != std::string::npos);
    auto get = request("GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(forward::build_http_request_head(get.head, kFacts, {}).find("Content-Length") == std::string::npos);
}

TEST_CASE("response head to the client: end-to-end headers, our framing and Connection") {
    auto r = response(
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: text/plain\r\n"
        "Connection: close, X-Internal\r\n"
        "X-Internal: 1\r\n"
        "Keep-Alive: timeout=5\r\n"
        "Transfer-Encoding: chunked\r\n"
        "Proxy-Authenticate: Basic\r\n"
        "Set-Cookie: app=1\r\n"
        "\r\n");
    forward::ResponseFacts facts;
    facts.body = {forward::Framing::Chunked, 0};
    CHECK(forward::build_response_head(r.head, facts) ==
          "HTTP/1.1 200 OK\r\n"
          "Content-Type: text/plain\r\n"
          "Set-Cookie: app=1\r\n"
          "Transfer-Encoding: chunked\r\n"
          "\r\n");
    facts.body = {forward::Framing::UntilClose, 0};
    facts.keep_alive = false;
    facts.client_version_minor = 0;
    facts.set_cookie = "srv=abc; Path=/";
    CHECK(forward::build_response_head(r.head, facts) ==
          "HTTP/1.1 200 OK\r\n"
          "Content-Type: text/plain\r\n"
          "Set-Cookie: app=1\r\n"
          "Connection: close\r\n"
          "Set-Cookie: srv=abc; Path=/\r\n"
          "\r\n");
    facts.keep_alive = true;
    facts.body = {forward::Framing::Length, 12};
    std::string kept = forward::build_response_head(r.head, facts);
    CHECK(kept.find("Content-Length: 12\r\nConnection: keep-alive\r\n") != std::string::npos);
}

TEST_CASE("response head: HEAD and 304 keep the back end's Content-Length; 1xx get no Connection") {
    auto head = response("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n");
    forward::ResponseFacts none;
    CHECK(forward::build_response_head(head.head, none) == "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n");
    auto interim = response("HTTP/1.1 100 Continue\r\n\r\n");
    none.keep_alive = false;
    CHECK(forward::build_response_head(interim.head, none) == "HTTP/1.1 100 Continue\r\n\r\n");
    auto no_reason = response("HTTP/1.0 204\r\n\r\n");
    CHECK(forward::build_response_head(no_reason.head, forward::ResponseFacts{}) == "HTTP/1.1 204 \r\n\r\n");
}

TEST_CASE("sticky tokens are opaque, stable, distinct per pool and back end") {
    std::string a = sticky::token("main", "127.0.0.1:9001");
    CHECK(a.size() == 16);
    CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(a == sticky::token("main", "127.0.0.1:9001"));
    CHECK(a.find("127") == std::string::npos);
    CHECK(a != sticky::token("main", "127.0.0.1:9002"));
    CHECK(a != sticky::token("other", "127.0.0.1:9001"));
    // The separator keeps "ab"+"c" and "a"+"bc" apart.
    CHECK(sticky::token("ab", "c") != sticky::token("a", "bc"));
    // Golden value: XXH3-64 of "main\0b1" with seed 0, shared by every process.
    CHECK(sticky::token("main", "b1") == "c2423f4998bff2ea");
}

TEST_CASE("sticky tokens are verified by lookup") {
    std::vector<std::string> tokens = {sticky::token("p", "b0"), sticky::token("p", "b1"), sticky::token("p", "b2")};
    CHECK(sticky::find(tokens, tokens[1]) == 1);
    CHECK(sticky::find(tokens, tokens[2]) == 2);
    CHECK(sticky::find(tokens, "") == chash::kNone);
    CHECK(sticky::find(tokens, "127.0.0.1:9001") == chash::kNone);
    CHECK(sticky::find(tokens, tokens[1].substr(0, 15)) == chash::kNone);
    CHECK(sticky::find(tokens, sticky::token("q", "b1")) == chash::kNone);
}

TEST_CASE("sticky cookie: read from the request, written with Path, HttpOnly and SameSite") {
    auto r = request("GET / HTTP/1.1\r\nHost: a\r\nCookie: io=x; WSGATE=\"abc\"; other=1\r\nCookie: WSGATE=late\r\n\r\n");
    CHECK(sticky::cookie_value(r.head, "WSGATE") == "abc");
    CHECK(sticky::cookie_value(r.head, "wsgate") == "");
    CHECK(sticky::cookie_value(r.head, "missing") == "");
    CHECK(sticky::set_cookie("WSGATE", "00ff") == "WSGATE=00ff; Path=/; HttpOnly; SameSite=Lax");
}

TEST_CASE("sticky cookie names are tokens") {
    CHECK(sticky::valid_cookie_name("WSGATE"));
    CHECK(sticky::valid_cookie_name("io_srv-1.x"));
    CHECK_FALSE(sticky::valid_cookie_name(""));
    CHECK_FALSE(sticky::valid_cookie_name("a b"));
    CHECK_FALSE(sticky::valid_cookie_name("a=b"));
    CHECK_FALSE(sticky::valid_cookie_name("a;b"));
    CHECK_FALSE(sticky::valid_cookie_name("caf\xc3\xa9"));
}

TEST_CASE("response head: a 426 keeps its Upgrade field, other responses lose it") {
    auto required = response("HTTP/1.1 426 Upgrade Required\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                             "Content-Length: 0\r\n\r\n");
    forward::ResponseFacts facts;
    facts.body = {forward::Framing::Length, 0};
    CHECK(forward::build_response_head(required.head, facts) ==
          "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n");
    auto ok = response("HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n");
    CHECK(forward::build_response_head(ok.head, facts) == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
}
