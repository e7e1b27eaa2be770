#include "net/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace net {

namespace {

// RFC 4291 §2.5.5.2: ::ffff:0:0/96.
bool is_v4_mapped(const std::array<std::uint8_t, 16>& b) {
    for (int i = 0; i < 10; ++i)
        if (b[i] != 0) return false;
    return b[10] == 0xff && b[11] == 0xff;
}

std::optional<IpAddress> parse_v4(std::string_view text) {
    IpAddress a;
    std::size_t pos = 0;
    for (int part = 0; part < 4; ++part) {
        if (part > 0) {
            if (pos >= text.size() || text[pos] != '.') return std::nullopt;
            ++pos;
        }
        std::size_t start = pos;
        unsigned value = 0;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && pos - start < 3) {
            value = value * 10 + static_cast<unsigned>(text[pos] - '0');
            ++pos;
        }
        std::size_t digits = pos - start;
        // No leading zeros: "010" is octal to some parsers and decimal to others.
        if (digits == 0 || value > 255 || (digits > 1 && text[start] == '0')) return std::nullopt;
        a.bytes[part] = static_cast<std::uint8_t>(value);
    }
    if (pos != text.size()) return std::nullopt;
    return a;
}

std::optional<IpAddress> parse_v6(std::string_view text) {
    // inet_pton wants a NUL-terminated string; INET6_ADDRSTRLEN bounds it.
    char buffer[INET6_ADDRSTRLEN];
    if (text.empty() || text.size() >= sizeof buffer) return std::nullopt;
    std::memcpy(buffer, text.data(), text.size());
    buffer[text.size()] = '\0';
    in6_addr addr;
    if (inet_pton(AF_INET6, buffer, &addr) != 1) return std::nullopt;
    return IpAddress::v6(addr.s6_addr);
}

bool prefix_equal(const IpAddress& a, const IpAddress& b, unsigned prefix) {
    unsigned whole = prefix / 8;
    if (std::memcmp(a.bytes.data(), b.bytes.data(), whole) != 0) return false;
    unsigned rest = prefix % 8;
    if (rest == 0) return true;
    auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (a.bytes[whole] & mask) == (b.bytes[whole] & mask);
}

bool host_bits_zero(const IpAddress& a, unsigned prefix) {
    for (std::size_t bit = prefix; bit < a.bit_length(); ++bit)
        if (a.bytes[bit / 8] & (0x80 >> (bit % 8))) return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// One X-Forwarded-For entry: an address, optionally with a port, IPv6
// optionally in brackets.
std::optional<IpAddress> parse_forwarded_entry(std::string_view entry) {
    if (entry.empty()) return std::nullopt;
    if (entry.front() == '[') {
        auto close = entry.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        std::string_view rest = entry.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':' || rest.size() == 1) return std::nullopt;
            for (char c : rest.substr(1))
                if (c < '0' || c > '9') return std::nullopt;
        }
        return parse_v6(entry.substr(1, close - 1));
    }
    if (auto a = IpAddress::parse(entry)) return a;
    // "a.b.c.d:port": exactly one colon, so it cannot be a bare IPv6 address.
    auto colon = entry.find(':');
    if (colon == std::string_view::npos || entry.find(':', colon + 1) != std::string_view::npos)
        return std::nullopt;
    std::string_view port = entry.substr(colon + 1);
    if (port.empty()) return std::nullopt;
    for (char c : port)
        if (c < '0' || c > '9') return std::nullopt;
    return parse_v4(entry.substr(0, colon));
}

}  // namespace

IpAddress IpAddress::v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    IpAddress r;
    r.bytes[0] = a;
    r.bytes[1] = b;
    r.bytes[2] = c;
    r.bytes[3] = d;
    return r;
}

IpAddress IpAddress::v6(const std::uint8_t* network_order) {
    IpAddress a;
    a.family = Family::V6;
    std::memcpy(a.bytes.data(), network_order, 16);
    if (is_v4_mapped(a.bytes))
        return v4(network_order[12], network_order[13], network_order[14], network_order[15]);
    return a;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    if (text.find(':') != std::string_view::npos) return parse_v6(text);
    return parse_v4(text);
}

std::optional<IpAddress> IpAddress::from_sockaddr(const sockaddr* address) {
    if (address == nullptr) return std::nullopt;
    if (address->sa_family == AF_INET) {
        sockaddr_in sin;
        std::memcpy(&sin, address, sizeof sin);
        IpAddress a;
        std::memcpy(a.bytes.data(), &sin.sin_addr, 4);
        return a;
    }
    if (address->sa_family == AF_INET6) {
        sockaddr_in6 sin6;
        std::memcpy(&sin6, address, sizeof sin6);
        return IpAddress::v6(sin6.sin6_addr.s6_addr);
    }
    return std::nullopt;
}

std::string IpAddress::to_string() const {
    char buffer[INET6_ADDRSTRLEN];
    if (family == Family::V4) {
        inet_ntop(AF_INET, bytes.data(), buffer, sizeof buffer);
    } else {
        inet_ntop(AF_INET6, bytes.data(), buffer, sizeof buffer);
    }
    return buffer;
}

std::variant<Cidr, std::string> Cidr::parse(std::string_view text) {
    std::string_view address_text = text;
    std::optional<unsigned> prefix;
    if (auto slash = text.find('/'); slash != std::string_view::npos) {
        address_text = text.substr(0, slash);
        std::string_view digits = text.substr(slash + 1);
        unsigned value = 0;
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
        if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
            (digits.size() > 1 && digits[0] == '0'))
            return std::string("invalid prefix length in \"") + std::string(text) + "\"";
        prefix = value;
    }
    // Parse without folding first: the prefix of a mapped network counts
    // 128 bits, not 32.
    std::optional<IpAddress> address;
    bool mapped = false;
    if (address_text.find(':') != std::string_view::npos) {
        char buffer[INET6_ADDRSTRLEN];
        in6_addr raw;
        if (!address_text.empty() && address_text.size() < sizeof buffer) {
            std::memcpy(buffer, address_text.data(), address_text.size());
            buffer[address_text.size()] = '\0';
            if (inet_pton(AF_INET6, buffer, &raw) == 1) {
                IpAddress a;
                a.family = IpAddress::Family::V6;
                std::memcpy(a.bytes.data(), raw.s6_addr, 16);
                mapped = is_v4_mapped(a.bytes);
                address = a;
            }
        }
    } else {
        address = parse_v4(address_text);
    }
    if (!address) return std::string("invalid address in \"") + std::string(text) + "\"";
    unsigned bits = static_cast<unsigned>(address->bit_length());
    unsigned length = prefix.value_or(bits);
    if (length > bits)
        return std::string("prefix length ") + std::to_string(length) + " is longer than " +
               std::to_string(bits) + " bits in \"" + std::string(text) + "\"";
    if (!host_bits_zero(*address, length))
        return std::string("host bits are set past the prefix in \"") + std::string(text) + "\"";
    Cidr cidr;
    if (mapped) {
        // Host bits are zero, so length >= 96: the ffff marker lies in bits 80..95.
        const auto& b = address->bytes;
        cidr.network = IpAddress::v4(b[12], b[13], b[14], b[15]);
        cidr.prefix = length - 96;
    } else {
        cidr.network = *address;
        cidr.prefix = length;
    }
    return cidr;
}

bool Cidr::contains(const IpAddress& address) const {
    return address.family == network.family && prefix_equal(address, network, prefix);
}

std::string Cidr::to_string() const { return network.to_string() + "/" + std::to_string(prefix); }

std::variant<CidrSet, std::string> CidrSet::parse(const std::vector<std::string>& entries) {
    CidrSet set;
    for (const auto& entry : entries) {
        auto parsed = Cidr::parse(entry);
        if (auto* error = std::get_if<std::string>(&parsed))
            return *error;
        set.add(std::get<Cidr>(parsed));
    }
    return set;
}

bool CidrSet::contains(const IpAddress& address) const {
    return std::any_of(networks_.begin(), networks_.end(),
                       [&](const Cidr& c) { return c.contains(address); });
}

IpAddress client_from_forwarded_for(std::string_view xff, const IpAddress& peer,
                                    const CidrSet& trusted) {
    if (!trusted.contains(peer)) return peer;
    IpAddress current = peer;
    while (!xff.empty()) {
        std::string_view entry;
        auto comma = xff.rfind(',');
        if (comma == std::string_view::npos) {
            entry = xff;
            xff = {};
        } else {
            entry = xff.substr(comma + 1);
            xff = xff.substr(0, comma);
        }
        entry = trim(entry);
        if (entry.empty()) continue;
        auto address = parse_forwarded_entry(entry);
        if (!address) return current;
        if (!trusted.contains(*address)) return *address;
        current = *address;
    }
    return current;
}

}  // namespace net
