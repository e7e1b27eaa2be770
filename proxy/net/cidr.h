// IP addresses, CIDR networks and trusted-proxy resolution of the client
// address, pure: text in, values out. No sockets, no DNS, no globals.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, RFC 4291 §2.5.5.2) are folded
// into IPv4 everywhere: an accepted IPv6 socket reports an IPv4 client as
// ::ffff:a.b.c.d, and it must match the IPv4 network an operator wrote.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

struct sockaddr;

namespace net {

struct IpAddress {
    enum class Family : std::uint8_t { V4, V6 };

    Family family = Family::V4;
    // Network byte order; an IPv4 address uses bytes[0..3], the rest are 0.
    std::array<std::uint8_t, 16> bytes{};

    // Parses "192.0.2.1" (exactly four decimal parts 0..255, no leading
    // zeros) or an RFC 4291 §2.2 IPv6 text form ("2001:db8::1",
    // "::ffff:192.0.2.1"); no brackets, ports or zone ids. A mapped IPv6
    // address comes back as its IPv4 address.
    static std::optional<IpAddress> parse(std::string_view text);

    // The address of an AF_INET or AF_INET6 socket address (mapped IPv6
    // folded to IPv4); nullopt for any other family.
    static std::optional<IpAddress> from_sockaddr(const sockaddr* address);

    static IpAddress v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d);
    // The IPv6 address in the 16 bytes at <network_order> (mapped folded).
    static IpAddress v6(const std::uint8_t* network_order);

    // "192.0.2.1" or the RFC 5952 canonical IPv6 text ("2001:db8::1").
    std::string to_string() const;

    std::size_t bit_length() const { return family == Family::V4 ? 32 : 128; }

    friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// A network: the address with every bit past <prefix> zero.
struct Cidr {
    IpAddress network;
    unsigned prefix = 0;  // 0..32 for IPv4, 0..128 for IPv6

    // Parses "10.0.0.0/8", "2001:db8::/32", or a bare host address
    // ("192.168.1.7" means /32, "::1" means /128). Errors are sentences for
    // the config layer: a bad address, a bad or too long prefix, or host bits
    // set past the prefix ("10.0.0.1/8": a typo more often than intent).
    // A mapped IPv6 network with prefix >= 96 becomes the IPv4 network
    // (::ffff:10.0.0.0/104 is 10.0.0.0/8); a shorter prefix has host bits
    // set (the ffff marker) and is refused as such.
    static std::variant<Cidr, std::string> parse(std::string_view text);

    // True when <address> lies in this network; IPv4 addresses never match
    // IPv6 networks and vice versa (mapped addresses are already IPv4).
    bool contains(const IpAddress& address) const;

    std::string to_string() const;  // "10.0.0.0/8"
};

class CidrSet {
public:
    // Parses every entry with Cidr::parse; the first error is returned as is
    // (it quotes the entry; the config layer adds the key and position).
    static std::variant<CidrSet, std::string> parse(const std::vector<std::string>& entries);

    void add(const Cidr& cidr) { networks_.push_back(cidr); }
    bool contains(const IpAddress& address) const;
    bool empty() const { return networks_.empty(); }
    std::size_t size() const { return networks_.size(); }

private:
    std::vector<Cidr> networks_;
};

// The client address of a request that reached us from <peer> and carries
// the X-Forwarded-For value <xff> (several header lines joined with ", "),
// trusting only proxies in <trusted>:
//  - when <peer> is not trusted, the header is the client's own claim and is
//    ignored: the result is <peer>;
//  - otherwise the list is walked from the right (each proxy appends the
//    address it received the connection from), skipping trusted addresses;
//    the first untrusted one is the client. When every entry is trusted the
//    leftmost one is the client;
//  - an entry that is not an address stops the walk: the result is the
//    last address the walk already accepted (the hop that presented the
//    garbage, which is a trusted proxy or <peer>), never anything left of it.
// Entries may carry a port ("192.0.2.1:4711", "[2001:db8::1]:4711") or IPv6
// brackets; surrounding spaces and tabs are ignored, empty entries skipped.
IpAddress client_from_forwarded_for(std::string_view xff, const IpAddress& peer,
                                    const CidrSet& trusted);

}  // namespace net
