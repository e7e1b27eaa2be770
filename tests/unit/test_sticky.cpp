#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "balance/chash.h"
#include "balance/sticky.h"
#include "protocol/http1.h"

namespace {

// A parsed request and the text its views point into.
struct Request {
    std::string text;
    http1::RequestHead head;
};

Request request(std::string text) {
    Request r{std::move(text), {}};
    http1::RequestParser parser;
    REQUIRE(parser.parse(r.text, r.head).status == http1::Status::Done);
    return r;
}

}  // namespace

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
