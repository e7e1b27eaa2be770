#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

#include "net/cidr.h"

namespace {

net::IpAddress ip(std::string_view text) {
    auto a = net::IpAddress::parse(text);
    REQUIRE_MESSAGE(a.has_value(), text);
    return *a;
}

net::Cidr cidr(std::string_view text) {
    auto parsed = net::Cidr::parse(text);
    if (auto* e = std::get_if<std::string>(&parsed)) FAIL(text << ": " << *e);
    return std::get<net::Cidr>(parsed);
}

std::string cidr_error(std::string_view text) {
    auto parsed = net::Cidr::parse(text);
    if (std::holds_alternative<net::Cidr>(parsed)) return "accepted";
    return std::get<std::string>(parsed);
}

net::CidrSet set_of(std::vector<std::string> entries) {
    auto parsed = net::CidrSet::parse(entries);
    REQUIRE(std::holds_alternative<net::CidrSet>(parsed));
    return std::get<net::CidrSet>(parsed);
}

}  // namespace

TEST_CASE("IPv4 and IPv6 addresses parse strictly and print canonically") {
    struct Case {
        const char* text;
        const char* printed;  // nullptr: rejected
    };
    const Case cases[] = {
        {"0.0.0.0", "0.0.0.0"},
        {"192.168.1.7", "192.168.1.7"},
        {"255.255.255.255", "255.255.255.255"},
        {"::1", "::1"},
        {"::", "::"},
        {"2001:DB8:0:0:0:0:0:1", "2001:db8::1"},
        {"fe80::1:2", "fe80::1:2"},
        {"::ffff:1.2.3.4", "1.2.3.4"},          // mapped folds to IPv4
        {"::ffff:0102:0304", "1.2.3.4"},
        {"256.1.1.1", nullptr},
        {"1.2.3", nullptr},
        {"1.2.3.4.5", nullptr},
        {"01.2.3.4", nullptr},                  // leading zero: octal ambiguity
        {"1.2.3.04", nullptr},
        {"1.2.3.4 ", nullptr},
        {" 1.2.3.4", nullptr},
        {"1..2.3", nullptr},
        {"1.2.3.", nullptr},
        {"a.b.c.d", nullptr},
        {"1234.1.1.1", nullptr},
        {"", nullptr},
        {"[::1]", nullptr},
        {"::1%eth0", nullptr},
        {"1:2:3:4:5:6:7:8:9", nullptr},
        {"1::2::3", nullptr},
        {"12345::", nullptr},
        {"1.2.3.4:80", nullptr},
    };
    for (const auto& c : cases) {
        CAPTURE(c.text);
        auto a = net::IpAddress::parse(c.text);
        if (c.printed == nullptr) {
            CHECK_FALSE(a.has_value());
        } else {
            REQUIRE(a.has_value());
            CHECK(a->to_string() == c.printed);
        }
    }
    CHECK(ip("10.1.2.3").family == net::IpAddress::Family::V4);
    CHECK(ip("::ffff:10.1.2.3").family == net::IpAddress::Family::V4);
    CHECK(ip("::10.1.2.3").family == net::IpAddress::Family::V6);  // compatible, not mapped
    CHECK(ip("::ffff:10.1.2.3") == ip("10.1.2.3"));
}

TEST_CASE("socket addresses convert, mapped IPv6 folding to IPv4") {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    inet_pton(AF_INET, "198.51.100.9", &sin.sin_addr);
    auto a = net::IpAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&sin));
    REQUIRE(a.has_value());
    CHECK(a->to_string() == "198.51.100.9");

    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:198.51.100.9", &sin6.sin6_addr);
    auto b = net::IpAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&sin6));
    REQUIRE(b.has_value());
    CHECK(*b == *a);

    inet_pton(AF_INET6, "2001:db8::7", &sin6.sin6_addr);
    auto c = net::IpAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&sin6));
    REQUIRE(c.has_value());
    CHECK(c->to_string() == "2001:db8::7");

    sockaddr unix_address{};
    unix_address.sa_family = AF_UNIX;
    CHECK_FALSE(net::IpAddress::from_sockaddr(&unix_address).has_value());
    CHECK_FALSE(net::IpAddress::from_sockaddr(nullptr).has_value());
}

TEST_CASE("CIDR networks parse, print and match") {
    struct Case {
        const char* network;
        const char* address;
        bool inside;
    };
    const Case cases[] = {
        {"10.0.0.0/8", "10.0.0.0", true},
        {"10.0.0.0/8", "10.255.255.255", true},
        {"10.0.0.0/8", "11.0.0.0", false},
        {"10.0.0.0/8", "9.255.255.255", false},
        {"192.168.1.7", "192.168.1.7", true},
        {"192.168.1.7", "192.168.1.8", false},
        {"192.168.1.7/32", "192.168.1.7", true},
        {"172.16.0.0/12", "172.31.255.1", true},
        {"172.16.0.0/12", "172.32.0.1", false},
        {"100.64.0.0/10", "100.127.0.1", true},
        {"100.64.0.0/10", "100.128.0.1", false},
        {"0.0.0.0/0", "203.0.113.5", true},
        {"0.0.0.0/0", "::1", false},
        {"::1/128", "::1", true},
        {"::1", "::1", true},
        {"::1", "::2", false},
        {"2001:db8::/32", "2001:db8:ffff::1", true},
        {"2001:db8::/32", "2001:db9::1", false},
        {"2001:db8::/33", "2001:db8:7fff::1", true},
        {"2001:db8::/33", "2001:db8:8000::1", false},
        {"::/0", "2001:db8::1", true},
        {"::/0", "1.2.3.4", false},
        {"1.2.3.0/24", "::ffff:1.2.3.4", true},        // mapped address, IPv4 network
        {"1.2.3.0/24", "::ffff:1.2.4.4", false},
        {"::ffff:1.2.3.0/120", "1.2.3.200", true},     // mapped network
        {"::ffff:1.2.3.0/120", "::ffff:1.2.3.200", true},
        {"::ffff:1.2.3.0/120", "1.2.4.1", false},
        {"::ffff:0.0.0.0/96", "8.8.8.8", true},
    };
    for (const auto& c : cases) {
        CAPTURE(c.network);
        CAPTURE(c.address);
        CHECK(cidr(c.network).contains(ip(c.address)) == c.inside);
    }
    CHECK(cidr("192.168.1.7").to_string() == "192.168.1.7/32");
    CHECK(cidr("::1").to_string() == "::1/128");
    CHECK(cidr("2001:db8::/32").to_string() == "2001:db8::/32");
    CHECK(cidr("::ffff:10.0.0.0/104").to_string() == "10.0.0.0/8");
}

TEST_CASE("CIDR errors are sentences that quote the entry") {
    CHECK(cidr_error("10.0.0.1/8") == "host bits are set past the prefix in \"10.0.0.1/8\"");
    CHECK(cidr_error("10.0.0.0/33") == "prefix length 33 is longer than 32 bits in \"10.0.0.0/33\"");
    CHECK(cidr_error("::/129") == "prefix length 129 is longer than 128 bits in \"::/129\"");
    CHECK(cidr_error("10.0.0.0/") == "invalid prefix length in \"10.0.0.0/\"");
    CHECK(cidr_error("10.0.0.0/08") == "invalid prefix length in \"10.0.0.0/08\"");
    CHECK(cidr_error("10.0.0.0/-1") == "invalid prefix length in \"10.0.0.0/-1\"");
    CHECK(cidr_error("10.0.0.0/8x") == "invalid prefix length in \"10.0.0.0/8x\"");
    CHECK(cidr_error("10.0.0.0/8/8") == "invalid prefix length in \"10.0.0.0/8/8\"");
    CHECK(cidr_error("10.0.0/8") == "invalid address in \"10.0.0/8\"");
    CHECK(cidr_error("example.com") == "invalid address in \"example.com\"");
    CHECK(cidr_error("") == "invalid address in \"\"");
    CHECK(cidr_error("2001:db8::1/32") == "host bits are set past the prefix in \"2001:db8::1/32\"");
    CHECK(cidr_error("::ffff:0.0.0.0/95") == "host bits are set past the prefix in \"::ffff:0.0.0.0/95\"");
    CHECK(cidr_error("10.0.0.0/0") == "host bits are set past the prefix in \"10.0.0.0/0\"");
    CHECK(cidr_error("0.0.0.0/0") == "accepted");
}

TEST_CASE("CidrSet matches any member and reports the first bad entry") {
    auto set = set_of({"10.0.0.0/8", "192.168.0.0/16", "::1"});
    CHECK(set.size() == 3);
    CHECK(set.contains(ip("10.2.3.4")));
    CHECK(set.contains(ip("192.168.44.1")));
    CHECK(set.contains(ip("::1")));
    CHECK(set.contains(ip("::ffff:10.9.9.9")));
    CHECK_FALSE(set.contains(ip("172.16.0.1")));
    CHECK_FALSE(set.contains(ip("::2")));

    net::CidrSet empty;
    CHECK(empty.empty());
    CHECK_FALSE(empty.contains(ip("10.0.0.1")));

    auto bad = net::CidrSet::parse({"10.0.0.0/8", "10.0.0.1/8", "bogus"});
    REQUIRE(std::holds_alternative<std::string>(bad));
    CHECK(std::get<std::string>(bad) == "host bits are set past the prefix in \"10.0.0.1/8\"");
}

TEST_CASE("client address from X-Forwarded-For walks right to left past trusted proxies") {
    auto trusted = set_of({"10.0.0.0/8", "2001:db8::/32"});
    struct Case {
        const char* xff;
        const char* peer;
        const char* client;
    };
    const Case cases[] = {
        // Untrusted peer: the header is the client's own claim.
        {"1.1.1.1", "203.0.113.9", "203.0.113.9"},
        {"", "203.0.113.9", "203.0.113.9"},
        // Trusted peer.
        {"", "10.0.0.1", "10.0.0.1"},
        {"198.51.100.7", "10.0.0.1", "198.51.100.7"},
        {"198.51.100.7, 10.0.0.2", "10.0.0.1", "198.51.100.7"},
        {"198.51.100.7,10.0.0.2,10.0.0.3", "10.0.0.1", "198.51.100.7"},
        // A spoofed left part never wins over the first untrusted hop.
        {"6.6.6.6, 198.51.100.7, 10.0.0.2", "10.0.0.1", "198.51.100.7"},
        // All trusted: the leftmost.
        {"10.0.0.5, 10.0.0.2", "10.0.0.1", "10.0.0.5"},
        // Spaces, tabs and empty entries.
        {" \t198.51.100.7 ,, 10.0.0.2 ,", "10.0.0.1", "198.51.100.7"},
        // Ports and brackets.
        {"198.51.100.7:4711, 10.0.0.2:80", "10.0.0.1", "198.51.100.7"},
        {"[2001:db9::5]:443, [2001:db8::2]", "10.0.0.1", "2001:db9::5"},
        {"2001:db9::5, 2001:db8::2", "2001:db8::1", "2001:db9::5"},
        // Mapped IPv6 entries and peers fold to IPv4.
        {"::ffff:198.51.100.7, ::ffff:10.0.0.2", "::ffff:10.0.0.1", "198.51.100.7"},
        // Garbage stops the walk at the last accepted hop.
        {"198.51.100.7, unknown, 10.0.0.2", "10.0.0.1", "10.0.0.2"},
        {"198.51.100.7, unknown", "10.0.0.1", "10.0.0.1"},
        {"198.51.100.7, 1.2.3.4:", "10.0.0.1", "10.0.0.1"},
        {"198.51.100.7, 1.2.3.4:x", "10.0.0.1", "10.0.0.1"},
        {"[2001:db9::5", "10.0.0.1", "10.0.0.1"},
        {"[2001:db9::5]x", "10.0.0.1", "10.0.0.1"},
        {"[1.2.3.4]", "10.0.0.1", "10.0.0.1"},
        {"_hidden, 10.0.0.7", "10.0.0.1", "10.0.0.7"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.xff);
        CAPTURE(c.peer);
        CHECK(net::client_from_forwarded_for(c.xff, ip(c.peer), trusted).to_string() == c.client);
    }
}
