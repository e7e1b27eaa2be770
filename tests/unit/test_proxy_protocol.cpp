#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <string>
#include <vector>

#include "net/proxy_protocol.h"

using proxyproto::Status;

namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

const Bytes v2_sig = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

// A v2 header: signature, <ver_cmd>, <fam>, then <block> with its length.
Bytes v2(std::uint8_t ver_cmd, std::uint8_t fam, const Bytes& block) {
    Bytes out = v2_sig;
    out.push_back(ver_cmd);
    out.push_back(fam);
    out.push_back(static_cast<std::uint8_t>(block.size() >> 8));
    out.push_back(static_cast<std::uint8_t>(block.size() & 0xff));
    out.insert(out.end(), block.begin(), block.end());
    return out;
}

Bytes v4_block() {
    // 192.0.2.1:56324 -> 198.51.100.2:443
    return {192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x01, 0xBB};
}

Bytes v6_block() {
    Bytes b(36, 0);
    inet_pton(AF_INET6, "2001:db8::1", b.data());
    inet_pton(AF_INET6, "2001:db8::2", b.data() + 16);
    b[32] = 0x12;
    b[33] = 0x34;
    b[34] = 0x00;
    b[35] = 0x50;
    return b;
}

proxyproto::Result parse(const Bytes& b, std::size_t max_length = proxyproto::max_v2_length) {
    return proxyproto::parse(std::span<const std::uint8_t>(b.data(), b.size()), max_length);
}

std::string source_of(const proxyproto::Result& r) {
    char text[INET6_ADDRSTRLEN] = {};
    if (r.source.ss_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, &r.source, sizeof sin);
        inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
        return std::string(text) + ":" + std::to_string(ntohs(sin.sin_port));
    }
    if (r.source.ss_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, &r.source, sizeof sin6);
        inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof text);
        return "[" + std::string(text) + "]:" + std::to_string(ntohs(sin6.sin6_port));
    }
    return "none";
}

std::string destination_of(const proxyproto::Result& r) {
    proxyproto::Result swapped;
    swapped.source = r.destination;
    return source_of(swapped);
}

// Feeds <input> split at every byte boundary: every proper prefix of a
// complete header needs more, and appending the client's first bytes never
// changes the outcome. Returns the result for the whole input.
proxyproto::Result parse_every_split(const Bytes& input) {
    auto whole = parse(input);
    for (std::size_t cut = 0; cut < input.size(); ++cut) {
        CAPTURE(cut);
        auto part = parse(Bytes(input.begin(), input.begin() + static_cast<std::ptrdiff_t>(cut)));
        if (whole.status == Status::Done) {
            CHECK(part.status == Status::NeedMore);
        } else if (part.status == Status::Error) {
            // An early error must be the error the whole input reports.
            CHECK(whole.status == Status::Error);
            CHECK(part.error == whole.error);
        } else {
            CHECK(part.status == Status::NeedMore);
        }
    }
    Bytes with_data = input;
    for (char c : std::string_view("GET / HTTP/1.1\r\n")) with_data.push_back(static_cast<std::uint8_t>(c));
    auto more = parse(with_data);
    CHECK(more.status == whole.status);
    CHECK(more.consumed == whole.consumed);
    CHECK(more.error == whole.error);
    return whole;
}

void check_error(const Bytes& input, std::string_view reason) {
    auto r = parse_every_split(input);
    CHECK(r.status == Status::Error);
    CHECK(r.error == reason);
}

void check_error(std::string_view input, std::string_view reason) {
    CAPTURE(input);
    check_error(bytes(input), reason);
}

}  // namespace

TEST_CASE("PROXY v1 TCP4 and TCP6 lines give the client address") {
    auto r = parse_every_split(bytes("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"));
    REQUIRE(r.status == Status::Done);
    CHECK(r.version == 1);
    CHECK(r.consumed == 47);
    CHECK_FALSE(r.local);
    CHECK(r.source_text == "192.168.0.1");
    CHECK(r.source_port == 56324);
    CHECK(source_of(r) == "192.168.0.1:56324");
    CHECK(destination_of(r) == "192.168.0.11:443");

    r = parse_every_split(bytes("PROXY TCP6 2001:DB8::1 2001:db8::2 0 65535\r\n"));
    REQUIRE(r.status == Status::Done);
    CHECK(r.source_text == "2001:db8::1");
    CHECK(source_of(r) == "[2001:db8::1]:0");
    CHECK(destination_of(r) == "[2001:db8::2]:65535");

    // A mapped client folds to IPv4, like an accepted IPv6 socket's peer.
    r = parse_every_split(bytes("PROXY TCP6 ::ffff:10.1.2.3 ::1 1 2\r\n"));
    REQUIRE(r.status == Status::Done);
    CHECK(r.source_text == "10.1.2.3");
    CHECK(source_of(r) == "10.1.2.3:1");

    // The longest line the spec allows (107 bytes) is accepted.
    std::string longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    REQUIRE(longest.size() == 104);
    r = parse_every_split(bytes(longest));
    CHECK(r.status == Status::Done);
    CHECK(r.consumed == 104);
}

TEST_CASE("PROXY v1 UNKNOWN means the socket's own address") {
    for (std::string line : {"PROXY UNKNOWN\r\n",
                             "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
                             "PROXY UNKNOWN whatever the sender likes\r\n"}) {
        CAPTURE(line);
        auto r = parse_every_split(bytes(line));
        REQUIRE(r.status == Status::Done);
        CHECK(r.local);
        CHECK(r.version == 1);
        CHECK(r.consumed == line.size());
        CHECK(r.source_text.empty());
    }
}

TEST_CASE("PROXY v1 rejects every deviation from the line format") {
    check_error("GET / HTTP/1.1\r\n", "not a PROXY protocol header");
    check_error("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header");
    check_error("PROXY\r\n", "not a PROXY protocol header");
    check_error("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY v1: unknown protocol");
    check_error("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY v1: unknown protocol");
    check_error("PROXY UNKNOWNX\r\n", "PROXY v1: unknown protocol");
    check_error("PROXY TCP4\r\n", "PROXY v1: unknown protocol");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY v1: missing fields");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY v1: too many fields");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "PROXY v1: too many fields");
    check_error("PROXY TCP4 1.2.3.4  5.6.7.8 1\r\n", "PROXY v1: invalid address");
    check_error("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "PROXY v1: invalid address");
    check_error("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "PROXY v1: invalid address");
    check_error("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "PROXY v1: invalid address");
    check_error("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY v1: invalid address");
    check_error("PROXY TCP6 ::1 ::g 1 2\r\n", "PROXY v1: invalid address");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY v1: invalid port");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "PROXY v1: invalid port");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", "PROXY v1: invalid port");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n", "PROXY v1: invalid port");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "PROXY v1: invalid port");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY v1: bare LF");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n", "PROXY v1: bare CR");
    check_error("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "PROXY v1: bare CR");
    check_error("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "PROXY v1: invalid character");
    check_error(bytes("PROXY UNKNOWN \xff\r\n"), "PROXY v1: invalid character");
    check_error(std::string("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33), "PROXY v1: invalid character");
    // No CRLF within 107 bytes.
    check_error("PROXY UNKNOWN " + std::string(93, 'x') + "\r\n", "PROXY v1: no CRLF within 107 bytes");
    std::string just_fits = "PROXY UNKNOWN " + std::string(91, 'x') + "\r\n";
    REQUIRE(just_fits.size() == 107);
    CHECK(parse_every_split(bytes(just_fits)).status == Status::Done);
    // 107 bytes ending in CR: the LF would be byte 108, and whatever byte
    // 108 is, the error is the same (found by fuzz_proxy_protocol).
    check_error("PROXY UNKNOWN " + std::string(92, 'x') + "\r", "PROXY v1: no CRLF within 107 bytes");
    check_error("PROXY UNKNOWN " + std::string(92, 'x') + "\rX", "PROXY v1: no CRLF within 107 bytes");
    check_error("PROXY UNKNOWN " + std::string(92, 'x') + "\r\n", "PROXY v1: no CRLF within 107 bytes");
}

TEST_CASE("PROXY v2 PROXY command over IPv4 and IPv6, TLVs skipped") {
    auto r = parse_every_split(v2(0x21, 0x11, v4_block()));
    REQUIRE(r.status == Status::Done);
    CHECK(r.version == 2);
    CHECK(r.consumed == 28);
    CHECK_FALSE(r.local);
    CHECK(r.source_text == "192.0.2.1");
    CHECK(r.source_port == 56324);
    CHECK(source_of(r) == "192.0.2.1:56324");
    CHECK(destination_of(r) == "198.51.100.2:443");

    // The HAProxy capture from the wild: 172.19.0.1:42578 -> 172.19.0.3:80.
    Bytes captured = v2(0x21, 0x11, {0xac, 0x13, 0x00, 0x01, 0xac, 0x13, 0x00, 0x03, 0xa6, 0x52, 0x00, 0x50});
    r = parse_every_split(captured);
    REQUIRE(r.status == Status::Done);
    CHECK(source_of(r) == "172.19.0.1:42578");

    r = parse_every_split(v2(0x21, 0x21, v6_block()));
    REQUIRE(r.status == Status::Done);
    CHECK(r.consumed == 52);
    CHECK(r.source_text == "2001:db8::1");
    CHECK(source_of(r) == "[2001:db8::1]:4660");
    CHECK(destination_of(r) == "[2001:db8::2]:80");

    // UDP is reported as well (the family and addresses are the same).
    r = parse_every_split(v2(0x21, 0x12, v4_block()));
    REQUIRE(r.status == Status::Done);
    CHECK(r.source_text == "192.0.2.1");

    // TLVs after the addresses (PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY) are skipped.
    Bytes with_tlvs = v4_block();
    const Bytes tlvs = {0x01, 0x00, 0x02, 'h', '2', 0x02, 0x00, 0x03, 'a', '.', 'b'};
    with_tlvs.insert(with_tlvs.end(), tlvs.begin(), tlvs.end());
    r = parse_every_split(v2(0x21, 0x11, with_tlvs));
    REQUIRE(r.status == Status::Done);
    CHECK(r.consumed == 16 + 23);
    CHECK(r.source_text == "192.0.2.1");
}

TEST_CASE("PROXY v2 LOCAL, UNSPEC and UNIX mean the socket's own address") {
    struct Case {
        std::uint8_t ver_cmd;
        std::uint8_t fam;
        Bytes block;
    };
    const Case cases[] = {
        {0x20, 0x00, {}},                 // LOCAL, the health-check form
        {0x20, 0x11, v4_block()},         // LOCAL with addresses: ignored
        {0x20, 0xff, {1, 2, 3}},          // LOCAL: the family byte is ignored too
        {0x21, 0x00, {}},                 // PROXY, AF_UNSPEC
        {0x21, 0x00, {9, 9, 9}},
        {0x21, 0x10, v4_block()},         // AF_INET with UNSPEC transport
        {0x21, 0x10, {}},
        {0x21, 0x31, Bytes(216, 'u')},    // AF_UNIX stream
        {0x21, 0x32, Bytes(216, 'u')},
    };
    for (const auto& c : cases) {
        CAPTURE(int(c.ver_cmd));
        CAPTURE(int(c.fam));
        auto r = parse_every_split(v2(c.ver_cmd, c.fam, c.block));
        REQUIRE(r.status == Status::Done);
        CHECK(r.local);
        CHECK(r.version == 2);
        CHECK(r.consumed == 16 + c.block.size());
        CHECK(r.source.ss_family == AF_UNSPEC);
    }
}

TEST_CASE("PROXY v2 rejects bad versions, commands, families and lengths") {
    check_error(v2(0x11, 0x11, v4_block()), "PROXY v2: unsupported version");
    check_error(v2(0x31, 0x11, v4_block()), "PROXY v2: unsupported version");
    check_error(v2(0x22, 0x11, v4_block()), "PROXY v2: unknown command");
    check_error(v2(0x2f, 0x11, v4_block()), "PROXY v2: unknown command");
    check_error(v2(0x21, 0x41, v4_block()), "PROXY v2: unknown address family");
    check_error(v2(0x21, 0x13, v4_block()), "PROXY v2: unknown transport");
    check_error(v2(0x21, 0x11, Bytes(11, 0)), "PROXY v2: address block too short");
    check_error(v2(0x21, 0x21, Bytes(35, 0)), "PROXY v2: address block too short");
    check_error(v2(0x21, 0x21, v4_block()), "PROXY v2: address block too short");
    Bytes broken_sig = v2(0x21, 0x11, v4_block());
    broken_sig[11] = 0x0B;
    check_error(broken_sig, "not a PROXY protocol header");
    broken_sig = v2(0x21, 0x11, v4_block());
    broken_sig[4] = 0x01;
    check_error(broken_sig, "not a PROXY protocol header");

    // The length limit is enforced from the fixed part alone, before the
    // TLVs arrive.
    Bytes big = v2(0x21, 0x11, Bytes(600, 0));
    auto r = parse(Bytes(big.begin(), big.begin() + 16), 512);
    CHECK(r.status == Status::Error);
    CHECK(r.error == "PROXY v2: header longer than the limit");
    CHECK(parse(big, 616).status == Status::Done);
    CHECK(parse(big, 615).status == Status::Error);
    // The protocol maximum: a 65535-byte block.
    Bytes largest = v2(0x21, 0x11, Bytes(65535, 0));
    r = parse(largest);
    CHECK(r.status == Status::Done);
    CHECK(r.consumed == proxyproto::max_v2_length);
    CHECK(parse(Bytes(largest.begin(), largest.end() - 1)).status == Status::NeedMore);
}

TEST_CASE("an empty buffer and partial signatures need more") {
    CHECK(parse({}).status == Status::NeedMore);
    CHECK(parse(bytes("PROX")).status == Status::NeedMore);
    CHECK(parse(Bytes(v2_sig.begin(), v2_sig.begin() + 5)).status == Status::NeedMore);
    CHECK(parse(bytes("\r\n\r\n\r")).status == Status::Error);
}
