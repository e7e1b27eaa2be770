// The pool `hash` setting (proxy/balance/key_spec.cpp).
#include <doctest/doctest.h>

#include "balance/chash.h"

using chash::KeySource;
using chash::KeySpec;

TEST_CASE("parse_key_spec: accepted forms, and to_string gives them back") {
    struct Case {
        std::string_view text;
        KeySource source;
        std::string_view name;
    };
    const Case cases[] = {
        {"ip", KeySource::Ip, ""},
        {"path", KeySource::Path, ""},
        {"header:X-User-Id", KeySource::Header, "X-User-Id"},
        {"cookie:session", KeySource::Cookie, "session"},
        {"query:room", KeySource::Query, "room"},
        {"query:a:b", KeySource::Query, "a:b"},
        {"claim:sub", KeySource::Claim, "sub"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.text);
        KeySpec spec{KeySource::Cookie, "stale"};
        REQUIRE(chash::parse_key_spec(c.text, spec));
        CHECK(spec.source == c.source);
        CHECK(spec.name == c.name);
        CHECK(chash::to_string(spec) == c.text);
    }
}

TEST_CASE("parse_key_spec: rejected forms") {
    for (std::string_view text : {"", "IP", "Path", "ip ", " ip", "header:", "cookie:", "query:", "header",
                                  "cookie", "query", "Header:X", "host", "uri", "ip:x", "path:/a", "claim:", "claim"}) {
        CAPTURE(text);
        KeySpec spec;
        CHECK_FALSE(chash::parse_key_spec(text, spec));
    }
}
