// Session keys from request heads built by hand (proxy/balance/key_extract.cpp).
#include <doctest/doctest.h>

#include <string>

#include "balance/chash.h"

using chash::extract_key;
using chash::KeySource;
using chash::KeySpec;

namespace {

constexpr std::string_view kClient = "192.0.2.7";

http1::RequestHead head(std::vector<http1::Header> headers, std::string_view path = "/chat",
                        std::string_view query = "") {
    http1::RequestHead r;
    r.method = "GET";
    r.path = path;
    r.query = query;
    r.headers = std::move(headers);
    return r;
}

// The key's text, and that it is a view into <within> rather than a copy.
void check_key(const chash::Key& key, std::string_view expected, std::string_view within) {
    CHECK_FALSE(key.fell_back);
    CHECK(key.value == expected);
    CHECK(key.value.data() >= within.data());
    CHECK(key.value.data() + key.value.size() <= within.data() + within.size());
}

void check_fell_back(const chash::Key& key) {
    CHECK(key.fell_back);
    CHECK(key.value == kClient);
    CHECK(key.value.data() == kClient.data());
}

}  // namespace

TEST_CASE("extract_key: ip is the client address") {
    const auto r = head({{"X-User", "u1"}});
    const auto key = extract_key({KeySource::Ip, {}}, r, kClient);
    CHECK_FALSE(key.fell_back);
    CHECK(key.value.data() == kClient.data());
    CHECK(key.value == kClient);
}

TEST_CASE("extract_key: path") {
    const std::string target = "/rooms/42";
    check_key(extract_key({KeySource::Path, {}}, head({}, target), kClient), "/rooms/42", target);
    check_fell_back(extract_key({KeySource::Path, {}}, head({}, ""), kClient));
}

TEST_CASE("extract_key: header, name case-insensitive, first occurrence") {
    const std::string first = "alice", second = "bob";
    const KeySpec spec{KeySource::Header, "X-User"};
    check_key(extract_key(spec, head({{"Host", "h"}, {"x-user", first}, {"X-USER", second}}), kClient), "alice",
              first);
    check_fell_back(extract_key(spec, head({{"Host", "h"}, {"X-Users", "alice"}}), kClient));
    // The first occurrence decides, even when it is empty.
    check_fell_back(extract_key(spec, head({{"X-User", ""}, {"X-User", "bob"}}), kClient));
}

TEST_CASE("extract_key: cookie") {
    const KeySpec spec{KeySource::Cookie, "sid"};
    auto key_of = [&](std::vector<http1::Header> headers) { return extract_key(spec, head(std::move(headers)), kClient); };

    const std::string plain = "a=1; sid=abc; b=2";
    check_key(key_of({{"Cookie", plain}}), "abc", plain);
    const std::string first = "sid=abc";
    check_key(key_of({{"Cookie", first}}), "abc", first);
    const std::string last = "a=1;sid=xyz";
    check_key(key_of({{"cookie", last}}), "xyz", last);
    const std::string spaced = "a=1 ;  sid = abc  ; b=2";
    check_key(key_of({{"Cookie", spaced}}), "abc", spaced);
    // RFC 6265 §4.1.1: a DQUOTE'd cookie-value; the quotes are not part of the key.
    const std::string quoted = "sid=\"abc def\"; b=2";
    check_key(key_of({{"Cookie", quoted}}), "abc def", quoted);
    const std::string lone_quote = "sid=\"";
    check_key(key_of({{"Cookie", lone_quote}}), "\"", lone_quote);
    // Names match exactly: case, prefixes and suffixes do not.
    check_fell_back(key_of({{"Cookie", "SID=abc; sidx=1; xsid=2"}}));
    // A pair without '=' is skipped, not taken as a name.
    const std::string bare = "sid; sid=real";
    check_key(key_of({{"Cookie", bare}}), "real", bare);
    // Several Cookie fields (HTTP/1.1 clients should not, some do): all are searched, first wins.
    const std::string second_field = "sid=two";
    check_key(key_of({{"Cookie", "a=1"}, {"X", "sid=no"}, {"Cookie", second_field}, {"Cookie", "sid=three"}}), "two",
              second_field);
    const std::string dup = "sid=one; sid=two";
    check_key(key_of({{"Cookie", dup}}), "one", dup);
    // Empty values count as missing.
    check_fell_back(key_of({{"Cookie", "sid=; b=2"}}));
    check_fell_back(key_of({{"Cookie", "sid=\"\""}}));
    check_fell_back(key_of({{"Cookie", ""}}));
    check_fell_back(key_of({{"Cookie", ";;; ;"}}));
    check_fell_back(key_of({}));
    check_fell_back(key_of({{"Set-Cookie", "sid=abc"}}));
}

TEST_CASE("extract_key: query parameter, as sent") {
    const KeySpec spec{KeySource::Query, "room"};
    auto key_of = [&](std::string_view query) { return extract_key(spec, head({}, "/chat", query), kClient); };

    const std::string q1 = "room=42&x=1";
    check_key(key_of(q1), "42", q1);
    const std::string q2 = "a=1&room=lobby%20b";
    check_key(key_of(q2), "lobby%20b", q2);
    const std::string q3 = "&&room=x=y";
    check_key(key_of(q3), "x=y", q3);
    const std::string q4 = "room=first&room=second";
    check_key(key_of(q4), "first", q4);
    check_fell_back(key_of("Room=1&rooms=2&xroom=3"));
    check_fell_back(key_of("room"));
    check_fell_back(key_of("room=&room=2"));
    check_fell_back(key_of("room&a=1"));
    check_fell_back(key_of(""));
}
