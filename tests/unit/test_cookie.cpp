#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "protocol/cookie.h"

namespace {

http1::RequestHead head(std::vector<http1::Header> headers) {
    http1::RequestHead h;
    h.method = "GET";
    h.target = "/";
    h.path = "/";
    h.headers = std::move(headers);
    return h;
}

}  // namespace

TEST_CASE("cookie::find in one Cookie field value") {
    CHECK(cookie::find("session=abc", "session") == "abc");
    CHECK(cookie::find("a=1; session=abc; b=2", "session") == "abc");
    CHECK(cookie::find("a=1;session=abc", "session") == "abc");
    CHECK(cookie::find("a=1 ;  session = abc  ; b=2", "session") == "abc");
    CHECK(cookie::find("a=1;\tsession=abc\t", "session") == "abc");
    // RFC 6265 §4.1.1: a DQUOTE'd cookie-value loses its quotes.
    CHECK(cookie::find("session=\"abc\"", "session") == "abc");
    CHECK(cookie::find("session=\"abc def\"; b=2", "session") == "abc def");
    CHECK(cookie::find("session=\"", "session") == "\"");
    CHECK(cookie::find("session=\"\"", "session") == "");
    // Present but empty is not absent.
    CHECK(cookie::find("session=", "session") == "");
    CHECK(cookie::find("session=first; session=second", "session") == "first");
    // Names match exactly: case, prefixes and suffixes do not.
    CHECK(cookie::find("x.session=abc; session=ok", "session") == "ok");
    CHECK(cookie::find("Session=abc", "session") == std::nullopt);
    CHECK(cookie::find("sessionx=abc", "session") == std::nullopt);
    // A pair without '=' is skipped, not taken as a name.
    CHECK(cookie::find("session", "session") == std::nullopt);
    CHECK(cookie::find("session; session=real", "session") == "real");
    CHECK(cookie::find("", "session") == std::nullopt);
    CHECK(cookie::find(";;;", "session") == std::nullopt);
    CHECK(cookie::find("a=b=c", "a") == "b=c");
}

TEST_CASE("cookie::find returns a view into the field") {
    const std::string field = "a=1; sid=xyz; b=2";
    auto value = cookie::find(field, "sid");
    REQUIRE(value.has_value());
    CHECK(value->data() >= field.data());
    CHECK(value->data() + value->size() <= field.data() + field.size());
}

TEST_CASE("cookie::find over a request's Cookie fields: the first field holding the name decides") {
    CHECK(cookie::find(head({{"Cookie", "a=1"}, {"X", "sid=no"}, {"cookie", "sid=two"}, {"Cookie", "sid=three"}}),
                       "sid") == "two");
    CHECK(cookie::find(head({{"COOKIE", "sid="}, {"Cookie", "sid=later"}}), "sid") == "");
    CHECK(cookie::find(head({{"Set-Cookie", "sid=1"}}), "sid") == std::nullopt);
    CHECK(cookie::find(head({}), "sid") == std::nullopt);
}
