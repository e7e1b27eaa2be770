// HTTP/1.1 head parser (RFC 9112). Every input is parsed whole, re-fed growing
// one byte at a time into one parser, and split at every byte boundary (a
// prefix, then the whole); all three must agree, an error once reported must
// stay, and each call gets a fresh copy of the bytes so that views into an
// earlier buffer would show.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "protocol/http1.h"

using http1::Limits;
using http1::RequestHead;
using http1::RequestParser;
using http1::ResponseHead;
using http1::ResponseParser;
using http1::Result;
using http1::Status;

namespace {

// A parsed head copied out of the buffer, so that it outlives it.
struct Parsed {
    Result result;
    std::string method, target, path, query, reason;
    int version_minor = -1;
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers;
    std::optional<std::uint64_t> content_length;
    bool chunked = false;

    bool has(std::string_view name, std::string_view value) const {
        for (const auto& [n, v] : headers) {
            if (n == name && v == value) return true;
        }
        return false;
    }
};

bool same_result(const Result& a, const Result& b) {
    return a.status == b.status && a.consumed == b.consumed && a.http_status == b.http_status && a.reason == b.reason;
}

std::string show(const Result& r) {
    const char* s = r.status == Status::Done ? "Done" : r.status == Status::NeedMore ? "NeedMore" : "Error";
    return std::string(s) + " consumed=" + std::to_string(r.consumed) + " status=" + std::to_string(r.http_status) +
           " reason=" + std::string(r.reason);
}

void copy_block(const http1::HeaderBlock& block, Parsed& p) {
    for (const http1::Header& h : block.headers) p.headers.emplace_back(h.name, h.value);
}

Parsed copy_out(const Result& r, const RequestHead& h) {
    Parsed p;
    p.result = r;
    if (r.status != Status::Done) return p;
    p.method = h.method;
    p.target = h.target;
    p.path = h.path;
    p.query = h.query;
    p.version_minor = h.version_minor;
    p.content_length = h.content_length;
    p.chunked = h.chunked;
    copy_block(h, p);
    return p;
}

Parsed copy_out(const Result& r, const ResponseHead& h) {
    Parsed p;
    p.result = r;
    if (r.status != Status::Done) return p;
    p.version_minor = h.version_minor;
    p.status = h.status;
    p.reason = h.reason;
    p.content_length = h.content_length;
    p.chunked = h.chunked;
    copy_block(h, p);
    return p;
}

bool same_head(const Parsed& a, const Parsed& b) {
    return a.method == b.method && a.target == b.target && a.path == b.path && a.query == b.query &&
           a.reason == b.reason && a.version_minor == b.version_minor && a.status == b.status &&
           a.headers == b.headers && a.content_length == b.content_length && a.chunked == b.chunked;
}

// Every view of a Done head points into <buf>.
bool views_inside(const RequestHead& h, std::string_view buf) {
    auto inside = [&](std::string_view v) {
        return v.empty() || (v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size()) || v == "/";
    };
    bool ok = inside(h.method) && inside(h.target) && inside(h.path) && inside(h.query);
    for (const http1::Header& x : h.headers) ok = ok && inside(x.name) && inside(x.value);
    return ok;
}
bool views_inside(const ResponseHead& h, std::string_view buf) {
    auto inside = [&](std::string_view v) {
        return v.empty() || (v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size());
    };
    bool ok = inside(h.reason);
    for (const http1::Header& x : h.headers) ok = ok && inside(x.name) && inside(x.value);
    return ok;
}

template <class Parser, class Head>
Parsed parse_once(Parser& parser, std::string_view bytes) {
    const std::string buf(bytes);  // a fresh address on every call
    Head head;
    const Result r = parser.parse(buf, head);
    if (r.status == Status::Done) CHECK(views_inside(head, buf));
    return copy_out(r, head);
}

// Parses <input> whole, growing and split, checks they agree, and returns
// the whole-input outcome.
template <class Parser, class Head>
Parsed run(std::string_view input, Limits limits) {
    Parser whole_parser(limits);
    const Parsed whole = parse_once<Parser, Head>(whole_parser, input);
    // Calling again with the same bytes changes nothing.
    const Parsed again = parse_once<Parser, Head>(whole_parser, input);
    CHECK(same_result(again.result, whole.result));
    CHECK(same_head(again, whole));

    Parser growing(limits);
    bool decided = false;
    for (std::size_t n = 0; n <= input.size(); ++n) {
        const Parsed step = parse_once<Parser, Head>(growing, input.substr(0, n));
        INFO("growing, prefix of " << n << " bytes: " << show(step.result) << " vs whole " << show(whole.result));
        if (decided || n == input.size()) {
            REQUIRE(same_result(step.result, whole.result));
            CHECK(same_head(step, whole));
        } else if (step.result.status != Status::NeedMore) {
            REQUIRE(same_result(step.result, whole.result));
            CHECK(same_head(step, whole));
            decided = true;
        }
    }
    for (std::size_t k = 0; k <= input.size(); ++k) {
        Parser split(limits);
        const Parsed first = parse_once<Parser, Head>(split, input.substr(0, k));
        const Parsed second = parse_once<Parser, Head>(split, input);
        INFO("split at " << k << ": " << show(first.result) << " then " << show(second.result));
        if (first.result.status != Status::NeedMore) REQUIRE(same_result(first.result, whole.result));
        REQUIRE(same_result(second.result, whole.result));
        CHECK(same_head(second, whole));
    }
    return whole;
}

Parsed request(std::string_view input, Limits limits = {}) { return run<RequestParser, RequestHead>(input, limits); }
Parsed response(std::string_view input, Limits limits = {}) {
    return run<ResponseParser, ResponseHead>(input, limits);
}

void expect_done(const Parsed& p, std::size_t consumed) {
    INFO(show(p.result));
    CHECK(p.result.status == Status::Done);
    CHECK(p.result.consumed == consumed);
}

void expect_error(const Parsed& p, int http_status, std::string_view reason) {
    INFO(show(p.result));
    CHECK(p.result.status == Status::Error);
    CHECK(p.result.http_status == http_status);
    CHECK(p.result.reason == reason);
    CHECK(p.result.consumed == 0);
}

void request_error(std::string_view input, int http_status, std::string_view reason, Limits limits = {}) {
    INFO("request: " << std::string(input));
    expect_error(request(input, limits), http_status, reason);
}

void response_error(std::string_view input, std::string_view reason, Limits limits = {}) {
    INFO("response: " << std::string(input));
    expect_error(response(input, limits), 502, reason);
}

// "GET <target> HTTP/1.1" with a Host, then <fields>, then the blank line.
std::string get(std::string_view target, std::string_view fields = "") {
    return "GET " + std::string(target) + " HTTP/1.1\r\nHost: example.com\r\n" + std::string(fields) + "\r\n";
}

std::string with_fields(std::string_view fields) { return get("/", fields); }

std::string ok_response(std::string_view fields) { return "HTTP/1.1 200 OK\r\n" + std::string(fields) + "\r\n"; }

}  // namespace

// ---- Requests that parse -----------------------------------------------------

TEST_CASE("the WebSocket opening handshake of RFC 6455 1.2 parses") {
    const std::string input =
        "GET /chat HTTP/1.1\r\n"
        "Host: server.example.com\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Origin: http://example.com\r\n"
        "Sec-WebSocket-Protocol: chat, superchat\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n";
    const Parsed p = request(input);
    expect_done(p, input.size());
    CHECK(p.method == "GET");
    CHECK(p.target == "/chat");
    CHECK(p.path == "/chat");
    CHECK(p.query == "");
    CHECK(p.version_minor == 1);
    CHECK(p.headers.size() == 7);
    CHECK(p.headers.front() == std::pair<std::string, std::string>{"Host", "server.example.com"});
    CHECK(p.has("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="));
    CHECK(p.has("Sec-WebSocket-Protocol", "chat, superchat"));
    CHECK_FALSE(p.content_length.has_value());
    CHECK_FALSE(p.chunked);

    // The look-ups work on the parsed head itself.
    RequestParser parser;
    RequestHead head;
    REQUIRE(parser.parse(input, head).status == Status::Done);
    CHECK(head.headers.capacity() == 7);  // one exact reservation, no growth
    CHECK(head.has_token("Connection", "upgrade"));
    CHECK(head.has_token("Upgrade", "WebSocket"));
    REQUIRE(head.find("sec-websocket-version") != nullptr);
    CHECK(head.find("sec-websocket-version")->value == "13");
}

TEST_CASE("bytes after the head are not consumed, and later calls repeat Done") {
    const std::string head = get("/ws?room=1");
    const std::string input = head + "\x81\x05hello";
    expect_done(request(input), head.size());

    RequestParser parser;
    RequestHead out;
    REQUIRE(parser.parse(head.substr(0, 10), out).status == Status::NeedMore);
    std::string grown = input;
    const Result r = parser.parse(grown, out);
    CHECK(r.status == Status::Done);
    CHECK(r.consumed == head.size());
    CHECK(out.path.data() == grown.data() + 4);
    grown += "more body";
    const Result again = parser.parse(grown, out);
    CHECK(same_result(again, r));
    CHECK(out.method.data() == grown.data());
    CHECK(out.query == "room=1");
}

TEST_CASE("path and query come from the origin-form target") {
    struct Case {
        std::string_view target, path, query;
    };
    for (const Case& c : {Case{"/", "/", ""}, Case{"/chat?room=1&x=2", "/chat", "room=1&x=2"},
                          Case{"/?", "/", ""}, Case{"/a?b?c", "/a", "b?c"}, Case{"/a/b/", "/a/b/", ""},
                          Case{"/%7Euser;p=1?q=%20", "/%7Euser;p=1", "q=%20"}, Case{"//x", "//x", ""}}) {
        INFO(std::string(c.target));
        const Parsed p = request(get(c.target));
        CHECK(p.result.status == Status::Done);
        CHECK(p.target == c.target);
        CHECK(p.path == c.path);
        CHECK(p.query == c.query);
    }
}

TEST_CASE("absolute-form targets keep the part after the authority as path") {
    struct Case {
        std::string_view target, path, query;
    };
    for (const Case& c :
         {Case{"http://example.com/chat?room=1", "/chat", "room=1"}, Case{"http://example.com", "/", ""},
          Case{"https://example.com:8443/a/b", "/a/b", ""}, Case{"ws://h?x=1", "/", "x=1"},
          Case{"HTTP://[::1]:80/p", "/p", ""}, Case{"coap+tcp://h/", "/", ""}}) {
        INFO(std::string(c.target));
        const Parsed p = request(get(c.target));
        CHECK(p.result.status == Status::Done);
        CHECK(p.target == c.target);
        CHECK(p.path == c.path);
        CHECK(p.query == c.query);
    }
}

TEST_CASE("asterisk-form with OPTIONS and authority-form with CONNECT") {
    const Parsed options = request("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(options.result.status == Status::Done);
    CHECK(options.path == "*");
    const Parsed connect = request("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    CHECK(connect.result.status == Status::Done);
    CHECK(connect.method == "CONNECT");
    CHECK(connect.target == "example.com:443");
    CHECK(connect.path == "example.com:443");
    CHECK(connect.query == "");
    CHECK(request("CONNECT [::1]:8080 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").result.status == Status::Done);
}

TEST_CASE("HTTP/1.0 needs no Host; any token is a method") {
    const Parsed p = request("GET / HTTP/1.0\r\n\r\n");
    expect_done(p, 18);
    CHECK(p.version_minor == 0);
    CHECK(p.headers.empty());
    const Parsed m = request("M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(m.result.status == Status::Error);  // asterisk-form is for OPTIONS only
    const Parsed custom = request("PRO~PFIND! /x HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(custom.result.status == Status::Done);
    CHECK(custom.method == "PRO~PFIND!");
}

TEST_CASE("empty lines before the request line are skipped and consumed (RFC 9112 2.2)") {
    const std::string input = "\r\n\r\n" + get("/");
    const Parsed p = request(input);
    expect_done(p, input.size());
    CHECK(p.method == "GET");
    CHECK(p.path == "/");
}

TEST_CASE("field values lose surrounding whitespace and keep inner whitespace and obs-text") {
    const Parsed p = request(with_fields("X-A:  \t v a\tl \t \r\nX-Empty:\r\nX-Blank:   \r\nX-Obs: caf\xc3\xa9\r\n"
                                         "x-lower-Case:v\r\n"));
    CHECK(p.result.status == Status::Done);
    CHECK(p.has("X-A", "v a\tl"));
    CHECK(p.has("X-Empty", ""));
    CHECK(p.has("X-Blank", ""));
    CHECK(p.has("X-Obs", "caf\xc3\xa9"));
    CHECK(p.has("x-lower-Case", "v"));  // names keep their case
    CHECK(p.headers.size() == 6);
}

TEST_CASE("Content-Length sets the body length") {
    struct Case {
        std::string_view fields;
        std::uint64_t length;
    };
    for (const Case& c : {Case{"Content-Length: 5\r\n", 5}, Case{"content-length: 0\r\n", 0},
                          Case{"Content-Length: 5, 5\r\n", 5}, Case{"Content-Length: 5,5 , 5\r\n", 5},
                          Case{"Content-Length: 5\r\nContent-Length: 5\r\n", 5},
                          Case{"Content-Length: 007\r\nContent-Length: 7\r\n", 7},
                          Case{"Content-Length: 18446744073709551615\r\n", UINT64_MAX}}) {
        INFO(std::string(c.fields));
        const Parsed p = request(with_fields(c.fields));
        CHECK(p.result.status == Status::Done);
        REQUIRE(p.content_length.has_value());
        CHECK(*p.content_length == c.length);
        CHECK_FALSE(p.chunked);
    }
}

TEST_CASE("Transfer-Encoding ending in chunked makes a chunked request") {
    for (std::string_view fields :
         {"Transfer-Encoding: chunked\r\n", "transfer-encoding: Chunked\r\n", "Transfer-Encoding: gzip, chunked\r\n",
          "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding: ,chunked, \r\n"}) {
        INFO(std::string(fields));
        const Parsed p = request(with_fields(fields));
        CHECK(p.result.status == Status::Done);
        CHECK(p.chunked);
        CHECK_FALSE(p.content_length.has_value());
    }
}

// ---- Requests that are rejected -----------------------------------------------

TEST_CASE("request line syntax") {
    request_error(" GET / HTTP/1.1\r\n\r\n", 400, "invalid method");
    request_error("GE@T / HTTP/1.1\r\n\r\n", 400, "invalid method");
    request_error("GET\t/ HTTP/1.1\r\n\r\n", 400, "invalid method");
    request_error("G\x01T / HTTP/1.1\r\n\r\n", 400, "invalid method");
    request_error("GET\r\n\r\n", 400, "malformed request line");
    request_error("GET /\r\n\r\n", 400, "malformed request line");  // HTTP/0.9
    request_error("GET  / HTTP/1.1\r\n\r\n", 400, "malformed request line");
    request_error("GET /  HTTP/1.1\r\n\r\n", 400, "malformed request line");
    request_error("GET / HTTP/1.1 \r\n\r\n", 400, "malformed request line");
    request_error("GET / \r\n\r\n", 400, "malformed HTTP version");
    request_error("GET / http/1.1\r\n\r\n", 400, "malformed HTTP version");
    request_error("GET / HTTP/1.10\r\n\r\n", 400, "malformed HTTP version");
    request_error("GET / HTTP/1\r\n\r\n", 400, "malformed HTTP version");
    request_error("GET / HTTP/1.x\r\n\r\n", 400, "malformed HTTP version");
    request_error("GET / HTTP/2.0\r\n\r\n", 505, "unsupported HTTP version");
    request_error("GET / HTTP/1.2\r\n\r\n", 505, "unsupported HTTP version");
    request_error("GET / HTTP/0.9\r\n\r\n", 505, "unsupported HTTP version");
    request_error("GET / HTTP/3.1\r\nHost: a\r\n\r\n", 505, "unsupported HTTP version");
}

TEST_CASE("request target syntax and form") {
    request_error(get("/a\x01z"), 400, "invalid character in request target");
    request_error(get("/a\tz"), 400, "invalid character in request target");
    request_error(get("/\x7f"), 400, "invalid character in request target");
    request_error(get("/caf\xc3\xa9"), 400, "invalid character in request target");
    request_error(get("/a#frag"), 400, "invalid character in request target");
    request_error(get(std::string("/a\0z", 4)), 400, "invalid character in request target");
    request_error(get("example.com"), 400, "invalid request target");  // authority-form without CONNECT
    request_error(get("example.com:80"), 400, "invalid request target");
    request_error(get("http:/x"), 400, "invalid request target");
    request_error(get("http://"), 400, "invalid request target");
    request_error(get("http:///p"), 400, "invalid request target");
    request_error(get("http://user@h/"), 400, "invalid request target");
    request_error(get("1http://h/"), 400, "invalid request target");
    request_error(get("?q"), 400, "invalid request target");
    request_error(get("*"), 400, "asterisk-form target without OPTIONS");
    request_error("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target not in authority-form");
    request_error("CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target not in authority-form");
    request_error("CONNECT example.com: HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target not in authority-form");
    request_error("CONNECT :443 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target not in authority-form");
    request_error("CONNECT h:443x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target not in authority-form");
    request_error("CONNECT h:123456 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target not in authority-form");
    request_error("CONNECT http://h:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target not in authority-form");
    request_error("CONNECT u@h:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "CONNECT target not in authority-form");
}

TEST_CASE("line endings are CRLF only") {
    request_error("GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF line ending");
    request_error("GET / HTTP/1.1\r\nHost: a\n\r\n", 400, "bare LF line ending");
    request_error("GET / HTTP/1.1\r\nHost: a\r\n\n", 400, "bare LF line ending");
    request_error("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bare LF line ending");
    request_error("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400, "bare CR");
    request_error("GET / HTTP/1.1\rHost: a\r\n\r\n", 400, "bare CR");
    request_error(with_fields("X: a\rb\r\n"), 400, "bare CR");
    request_error(with_fields("X: a\r\r\n"), 400, "bare CR");
    request_error("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bare CR");
}

TEST_CASE("header field syntax") {
    request_error(with_fields("X-Key : v\r\n"), 400, "whitespace before header colon");
    request_error(with_fields("X-Key\t: v\r\n"), 400, "whitespace before header colon");
    request_error(with_fields("X Key: v\r\n"), 400, "invalid header name");
    request_error(with_fields("X-Key \r\n"), 400, "invalid header name");
    request_error(with_fields("X@Key: v\r\n"), 400, "invalid header name");
    request_error(with_fields(std::string("X\0Key: v\r\n", 10)), 400, "invalid header name");
    request_error(with_fields("X\xc3\xa9: v\r\n"), 400, "invalid header name");
    request_error(with_fields(": v\r\n"), 400, "empty header name");
    request_error(with_fields("X-Key\r\n"), 400, "missing colon in header line");
    request_error(with_fields(std::string("X: a\0b\r\n", 8)), 400, "NUL in header value");
    request_error(with_fields("X: a\x01" "b\r\n"), 400, "control character in header value");
    request_error(with_fields("X: a\x1f\r\n"), 400, "control character in header value");
    request_error(with_fields("X: a\x7f\r\n"), 400, "control character in header value");
    request_error(with_fields("X: a\x0b\r\n"), 400, "control character in header value");
    // RFC 9112 5.2: obs-fold, including whitespace right after the request line.
    request_error(with_fields("X: a\r\n b\r\n"), 400, "obs-fold line folding");
    request_error(with_fields("X: a\r\n\tb\r\n"), 400, "obs-fold line folding");
    request_error("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "obs-fold line folding");
}

TEST_CASE("Content-Length and Transfer-Encoding rules") {
    for (std::string_view cl : {"", "abc", "-1", "+5", "5 5", "5,", ",5", "0x10", "5;", "1.0", "18446744073709551616",
                                "99999999999999999999999"}) {
        INFO(std::string(cl));
        request_error(with_fields("Content-Length: " + std::string(cl) + "\r\n"), 400, "invalid Content-Length");
    }
    request_error(with_fields("Content-Length: 5, 6\r\n"), 400, "conflicting Content-Length");
    request_error(with_fields("Content-Length: 5\r\nContent-Length: 6\r\n"), 400, "conflicting Content-Length");
    request_error(with_fields("Content-Length: 5\r\nContent-Length: 5, 6\r\n"), 400, "conflicting Content-Length");
    request_error(with_fields("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400,
                  "Content-Length with Transfer-Encoding");
    request_error(with_fields("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), 400,
                  "Content-Length with Transfer-Encoding");
    request_error(with_fields("Transfer-Encoding: gzip\r\n"), 400, "Transfer-Encoding does not end in chunked");
    request_error(with_fields("Transfer-Encoding:\r\n"), 400, "Transfer-Encoding does not end in chunked");
    request_error(with_fields("Transfer-Encoding: chunked;x=1\r\n"), 400, "Transfer-Encoding does not end in chunked");
    request_error(with_fields("Transfer-Encoding: chunked, gzip\r\n"), 400, "chunked is not the final transfer coding");
    request_error(with_fields("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400,
                  "chunked is not the final transfer coding");
    request_error("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "Transfer-Encoding in HTTP/1.0 request");
}

TEST_CASE("Host rules (RFC 9112 3.2)") {
    request_error("GET / HTTP/1.1\r\n\r\n", 400, "missing Host");
    request_error("GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", 400, "missing Host");
    request_error(with_fields("Host: example.com\r\n"), 400, "multiple Host headers");
    request_error(with_fields("host: other\r\n"), 400, "multiple Host headers");
    request_error("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, "multiple Host headers");
    request_error("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host");
    request_error("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid Host");
    request_error("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, "invalid Host");
    request_error("GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", 400, "invalid Host");
    CHECK(request("GET / HTTP/1.1\r\nHost:\r\n\r\n").result.status == Status::Done);  // empty is allowed
    CHECK(request("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").result.status == Status::Done);
    CHECK(request("GET / HTTP/1.1\r\nHost: xn--caf-dma.example:80\r\n\r\n").result.status == Status::Done);
}

TEST_CASE("an error is reported as soon as its line is complete, before the head ends") {
    struct Case {
        std::string_view prefix;
        int status;
    };
    for (const Case& c : {Case{"GET / HTTP/2.0\r\n", 505}, Case{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", 400},
                          Case{"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n", 400},
                          Case{"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n", 400},
                          Case{"GET / HTTP/1.1\r\nX : y\r\n", 400}, Case{"GET / HTTP/1.1\r\n\n", 400}}) {
        INFO(std::string(c.prefix));
        RequestParser parser;
        RequestHead head;
        const Result r = parser.parse(c.prefix, head);
        CHECK(r.status == Status::Error);
        CHECK(r.http_status == c.status);
    }
}

// ---- Limits ---------------------------------------------------------------------

TEST_CASE("max_head_bytes: a head of exactly the limit passes, one byte more is 431") {
    Limits limits;
    limits.max_head_bytes = 64;
    const std::string base = get("/", "X: ");  // the X field is padded to reach the size
    const std::string exact = get("/", "X: " + std::string(64 - base.size() - 2, 'a') + "\r\n");
    REQUIRE(exact.size() == 64);
    expect_done(request(exact, limits), 64);
    const std::string over = get("/", "X: " + std::string(65 - base.size() - 2, 'a') + "\r\n");
    REQUIRE(over.size() == 65);
    request_error(over, 431, "head too large", limits);
    // Leading empty lines count toward the head.
    request_error("\r\n" + exact, 431, "head too large", limits);
}

TEST_CASE("max_head_bytes is enforced on a head that has not ended") {
    Limits limits;
    limits.max_head_bytes = 64;
    const std::string endless = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(100, 'a');
    request_error(endless, 431, "head too large", limits);
    RequestParser parser(limits);
    RequestHead head;
    // Still incomplete within the limit...
    CHECK(parser.parse(std::string_view(endless).substr(0, 40), head).status == Status::NeedMore);
    // ... and rejected once more than the limit is buffered.
    const Result r = parser.parse(std::string_view(endless).substr(0, 65), head);
    CHECK(r.status == Status::Error);
    CHECK(r.http_status == 431);
    // An endless run of empty lines is no way around it.
    std::string blank_lines;
    for (int i = 0; i < 40; ++i) blank_lines += "\r\n";
    request_error(blank_lines, 431, "head too large", limits);
}

TEST_CASE("limits are reported at the first byte that decides them") {
    Limits limits;
    limits.max_head_bytes = 64;
    limits.max_line_bytes = 20;
    auto status_at = [&](std::string_view input, std::size_t n) {
        RequestParser parser(limits);
        RequestHead head;
        return parser.parse(input.substr(0, n), head).http_status;
    };
    // A line may hold 20 bytes and its CRLF: with 22 bytes and no LF it is too long.
    const std::string endless_line = "GET /" + std::string(100, 'a');
    CHECK(status_at(endless_line, 21) == 0);
    CHECK(status_at(endless_line, 22) == 414);
    // The LF ending the last line must lie within the first 64 bytes.
    std::string endless_head = "GET / HTTP/1.1\r\n";
    while (endless_head.size() < 100) endless_head += "X: 12345678\r\n";
    endless_head += "\r\n";
    const std::size_t last_line = 16 + 13 * 3;  // the 4th field starts at 55 and ends after 64
    CHECK(status_at(endless_head, 63) == 0);
    CHECK(status_at(endless_head, 64) == 431);
    CHECK(status_at(endless_head, last_line) == 0);
    // A head whose lines end exactly at the limit cannot still end within it.
    const std::string at_limit = "GET / HTTP/1.1\r\nHost: a\r\n" + std::string("X: 12345678\r\n") + "Y: 12345678\r\n" +
                                 "Z: 12345678\r\n";
    REQUIRE(at_limit.size() == 64);
    CHECK(status_at(at_limit, 63) == 0);
    CHECK(status_at(at_limit, 64) == 431);
}

TEST_CASE("max_line_bytes: request line over the limit is 414, a header line 431") {
    Limits limits;
    limits.max_line_bytes = 40;
    const std::string prefix = "GET /";
    const std::string suffix = " HTTP/1.1";
    const std::string line40 = prefix + std::string(40 - prefix.size() - suffix.size(), 'a') + suffix;
    REQUIRE(line40.size() == 40);
    CHECK(request(line40 + "\r\nHost: a\r\n\r\n", limits).result.status == Status::Done);
    const std::string line41 = prefix + std::string(41 - prefix.size() - suffix.size(), 'a') + suffix;
    request_error(line41 + "\r\nHost: a\r\n\r\n", 414, "request line too long", limits);
    // Without any line ending at all.
    request_error("GET /" + std::string(100, 'a'), 414, "request line too long", limits);

    const std::string field40 = "X: " + std::string(37, 'v');
    CHECK(request(get("/", field40 + "\r\n"), limits).result.status == Status::Done);
    request_error(get("/", field40 + "v\r\n"), 431, "header line too long", limits);
    request_error("GET / HTTP/1.1\r\nX: " + std::string(100, 'v'), 431, "header line too long", limits);
}

TEST_CASE("max_headers: the limit passes, one more field is 431") {
    Limits limits;
    limits.max_headers = 5;
    std::string four;
    for (int i = 0; i < 4; ++i) four += "X-" + std::to_string(i) + ": v\r\n";
    const Parsed p = request(get("/", four), limits);  // Host + 4
    CHECK(p.result.status == Status::Done);
    CHECK(p.headers.size() == 5);
    request_error(get("/", four + "X-4: v\r\n"), 431, "too many header fields", limits);
}

TEST_CASE("a 16 KiB head fed one byte at a time completes") {
    std::string input = "GET /big HTTP/1.1\r\nHost: example.com\r\n";
    int fields = 1;
    while (input.size() < 16384 - 200) {
        input += "X-Field-" + std::to_string(fields) + ": " + std::string(150, 'v') + "\r\n";
        ++fields;
    }
    input += "\r\n";
    REQUIRE(input.size() <= 16384);
    REQUIRE(input.size() > 16000);
    Limits limits;
    limits.max_headers = 1000;
    RequestParser parser(limits);
    RequestHead head;
    Result r;
    std::size_t n = 0;
    for (; n <= input.size(); ++n) {
        r = parser.parse(std::string_view(input).substr(0, n), head);
        if (r.status != Status::NeedMore) break;
    }
    CHECK(n == input.size());
    CHECK(r.status == Status::Done);
    CHECK(r.consumed == input.size());
    CHECK(head.headers.size() == static_cast<std::size_t>(fields));
    CHECK(head.path == "/big");
}

// ---- Responses ------------------------------------------------------------------

TEST_CASE("the 101 response of RFC 6455 1.2 parses") {
    const std::string input =
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Protocol: chat\r\n"
        "\r\n";
    const Parsed p = response(input + "\x81\x02hi");
    expect_done(p, input.size());
    CHECK(p.version_minor == 1);
    CHECK(p.status == 101);
    CHECK(p.reason == "Switching Protocols");
    CHECK(p.headers.size() == 4);
    CHECK(p.has("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
}

TEST_CASE("status lines with empty, missing and unusual reason phrases") {
    struct Case {
        std::string_view line;
        int minor, status;
        std::string_view reason;
    };
    for (const Case& c : {Case{"HTTP/1.1 200 OK", 1, 200, "OK"}, Case{"HTTP/1.1 200 ", 1, 200, ""},
                          Case{"HTTP/1.1 200", 1, 200, ""}, Case{"HTTP/1.0 404 Not Found", 0, 404, "Not Found"},
                          Case{"HTTP/1.1 599 x\ty  z\xff", 1, 599, "x\ty  z\xff"}, Case{"HTTP/1.1 100 ", 1, 100, ""},
                          Case{"HTTP/1.1 426  Upgrade Required ", 1, 426, " Upgrade Required "}}) {
        INFO(std::string(c.line));
        const Parsed p = response(std::string(c.line) + "\r\n\r\n");
        CHECK(p.result.status == Status::Done);
        CHECK(p.version_minor == c.minor);
        CHECK(p.status == c.status);
        CHECK(p.reason == c.reason);
    }
}

TEST_CASE("response framing") {
    const Parsed length = response(ok_response("Content-Length: 12\r\n"));
    REQUIRE(length.content_length.has_value());
    CHECK(*length.content_length == 12);
    CHECK_FALSE(length.chunked);
    const Parsed chunked = response(ok_response("Transfer-Encoding: gzip, chunked\r\n"));
    CHECK(chunked.chunked);
    CHECK_FALSE(chunked.content_length.has_value());
    // RFC 9112 6.3: codings not ending in chunked mean read until close.
    for (std::string_view te : {"gzip", "chunked, gzip", ""}) {
        INFO(std::string(te));
        const Parsed close = response(ok_response("Transfer-Encoding: " + std::string(te) + "\r\n"));
        CHECK(close.result.status == Status::Done);
        CHECK_FALSE(close.chunked);
        CHECK_FALSE(close.content_length.has_value());
    }
    const Parsed none = response(ok_response("Host: a\r\nHost: b\r\n"));  // Host rules are for requests
    CHECK(none.result.status == Status::Done);
    CHECK_FALSE(none.chunked);
    CHECK_FALSE(none.content_length.has_value());
}

TEST_CASE("response rejections all carry 502") {
    response_error("HTTP/1.1 099 Low\r\n\r\n", "invalid status code");
    response_error("HTTP/1.1 600 High\r\n\r\n", "invalid status code");
    response_error("HTTP/1.1 000\r\n\r\n", "invalid status code");
    response_error("HTTP/1.1 20 OK\r\n\r\n", "malformed status line");
    response_error("HTTP/1.1 2000 OK\r\n\r\n", "malformed status line");
    response_error("HTTP/1.1 2x0 OK\r\n\r\n", "malformed status line");
    response_error("HTTP/1.1  200 OK\r\n\r\n", "malformed status line");
    response_error("HTTP/1.1\t200 OK\r\n\r\n", "malformed status line");
    response_error("http/1.1 200 OK\r\n\r\n", "malformed status line");
    response_error("HTTP/1.1\r\n\r\n", "malformed status line");
    response_error("ICY 200 OK\r\n\r\n", "malformed status line");
    response_error("\r\nHTTP/1.1 200 OK\r\n\r\n", "malformed status line");
    response_error("HTTP/2.0 200 OK\r\n\r\n", "unsupported HTTP version");
    response_error("HTTP/1.2 200 OK\r\n\r\n", "unsupported HTTP version");
    response_error("HTTP/1.1 200 O\x01K\r\n\r\n", "invalid character in reason phrase");
    response_error("HTTP/1.1 200 O\x7fK\r\n\r\n", "invalid character in reason phrase");
    response_error("HTTP/1.1 200 OK\nX: y\r\n\r\n", "bare LF line ending");
    response_error("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", "bare CR");
    response_error(ok_response("X : y\r\n"), "whitespace before header colon");
    response_error(ok_response("X: y\r\n z\r\n"), "obs-fold line folding");
    response_error(ok_response(std::string("X: \0\r\n", 6)), "NUL in header value");
    response_error(ok_response("Content-Length: x\r\n"), "invalid Content-Length");
    response_error(ok_response("Content-Length: 1\r\nContent-Length: 2\r\n"), "conflicting Content-Length");
    response_error(ok_response("Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"),
                   "Content-Length with Transfer-Encoding");
}

TEST_CASE("response limits carry 502") {
    Limits limits;
    limits.max_head_bytes = 64;
    limits.max_headers = 2;
    limits.max_line_bytes = 30;
    CHECK(response("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", limits).result.status == Status::Done);
    response_error("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", "too many header fields", limits);
    response_error("HTTP/1.1 200 " + std::string(30, 'K') + "\r\n\r\n", "status line too long", limits);
    response_error("HTTP/1.1 200 OK\r\nA: " + std::string(28, 'v') + "\r\n\r\n", "header line too long", limits);
    response_error("HTTP/1.1 200 " + std::string(16, 'K') + "\r\nA: " + std::string(26, 'v') + "\r\nB: 1\r\n\r\n",
                   "head too large", limits);
}
