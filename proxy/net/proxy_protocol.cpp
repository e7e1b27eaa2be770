#include "net/proxy_protocol.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "net/cidr.h"

namespace proxyproto {

namespace {

constexpr std::uint8_t v1_signature[] = {'P', 'R', 'O', 'X', 'Y', ' '};
// §2.2: contains a NUL at the fifth position, never a C string.
constexpr std::uint8_t v2_signature[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

// v2 §2.2 byte 13 (command, low nibble) and byte 14 (family, high nibble;
// transport, low nibble).
constexpr std::uint8_t cmd_local = 0x0;
constexpr std::uint8_t cmd_proxy = 0x1;
constexpr std::uint8_t fam_unspec = 0x0;
constexpr std::uint8_t fam_inet = 0x1;
constexpr std::uint8_t fam_inet6 = 0x2;
constexpr std::uint8_t fam_unix = 0x3;
constexpr std::uint8_t transport_unspec = 0x0;
constexpr std::uint8_t transport_dgram = 0x2;

Result error(std::string_view reason) {
    Result r;
    r.status = Status::Error;
    r.error = reason;
    return r;
}

Result need_more() { return Result{}; }

Result local(int version, std::size_t consumed) {
    Result r;
    r.status = Status::Done;
    r.version = version;
    r.consumed = consumed;
    r.local = true;
    return r;
}

bool prefix_matches(std::span<const std::uint8_t> buffered, std::span<const std::uint8_t> sig) {
    std::size_t n = std::min(buffered.size(), sig.size());
    return std::equal(buffered.begin(), buffered.begin() + static_cast<std::ptrdiff_t>(n),
                      sig.begin());
}

void fill_sockaddr(sockaddr_storage& out, const net::IpAddress& address, std::uint16_t port) {
    out = {};
    if (address.family == net::IpAddress::Family::V4) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        std::memcpy(&sin.sin_addr, address.bytes.data(), 4);
        std::memcpy(&out, &sin, sizeof sin);
    } else {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(port);
        std::memcpy(&sin6.sin6_addr, address.bytes.data(), 16);
        std::memcpy(&out, &sin6, sizeof sin6);
    }
}

Result done(int version, std::size_t consumed, const net::IpAddress& source,
            std::uint16_t source_port, const net::IpAddress& destination,
            std::uint16_t destination_port) {
    Result r;
    r.status = Status::Done;
    r.version = version;
    r.consumed = consumed;
    fill_sockaddr(r.source, source, source_port);
    fill_sockaddr(r.destination, destination, destination_port);
    r.source_text = source.to_string();
    r.source_port = source_port;
    return r;
}

// §2.1: decimal 0..65535 without leading zeros.
std::optional<std::uint16_t> parse_v1_port(std::string_view text) {
    if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0'))
        return std::nullopt;
    std::uint32_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (value > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(value);
}

// <line> is the v1 line without its CRLF.
Result parse_v1_line(std::string_view line, std::size_t consumed) {
    line.remove_prefix(sizeof v1_signature);
    // §2.1: after UNKNOWN the receiver ignores everything up to the CRLF.
    if (line == "UNKNOWN" || line.starts_with("UNKNOWN ")) return local(1, consumed);
    bool v4 = line.starts_with("TCP4 ");
    if (!v4 && !line.starts_with("TCP6 ")) return error("PROXY v1: unknown protocol");
    line.remove_prefix(5);
    std::string_view fields[4];
    for (int i = 0; i < 4; ++i) {
        auto space = line.find(' ');
        if (i < 3) {
            if (space == std::string_view::npos) return error("PROXY v1: missing fields");
            fields[i] = line.substr(0, space);
            line.remove_prefix(space + 1);
        } else {
            if (space != std::string_view::npos) return error("PROXY v1: too many fields");
            fields[i] = line;
        }
    }
    // The family dictates the text form: dotted quads for TCP4, colons for TCP6.
    auto parse_address = [v4](std::string_view text) -> std::optional<net::IpAddress> {
        if ((text.find(':') == std::string_view::npos) == !v4) return std::nullopt;
        return net::IpAddress::parse(text);
    };
    auto source = parse_address(fields[0]);
    auto destination = parse_address(fields[1]);
    if (!source || !destination) return error("PROXY v1: invalid address");
    auto source_port = parse_v1_port(fields[2]);
    auto destination_port = parse_v1_port(fields[3]);
    if (!source_port || !destination_port) return error("PROXY v1: invalid port");
    return done(1, consumed, *source, *source_port, *destination, *destination_port);
}

Result parse_v1(std::span<const std::uint8_t> buffered) {
    std::size_t limit = std::min(buffered.size(), max_v1_length);
    for (std::size_t i = 0; i < limit; ++i) {
        std::uint8_t c = buffered[i];
        if (c == '\n') {
            if (i == 0 || buffered[i - 1] != '\r') return error("PROXY v1: bare LF");
            std::string_view line(reinterpret_cast<const char*>(buffered.data()), i - 1);
            return parse_v1_line(line, i + 1);
        }
        // §2.1: "must not tolerate a single CR or LF character to end the line".
        // A CR in the last allowed position cannot start a CRLF in time; that
        // is the "no CRLF" error, whatever byte follows.
        if (c == '\r' && i + 1 < limit && buffered[i + 1] != '\n')
            return error("PROXY v1: bare CR");
        // The line is US-ASCII text; anything else is not the protocol.
        if (c != '\r' && (c < 0x20 || c > 0x7e)) return error("PROXY v1: invalid character");
    }
    if (buffered.size() >= max_v1_length) return error("PROXY v1: no CRLF within 107 bytes");
    return need_more();
}

std::uint16_t read_be16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

Result parse_v2(std::span<const std::uint8_t> buffered, std::size_t max_length) {
    if (buffered.size() > 12) {
        std::uint8_t version = buffered[12] >> 4;
        std::uint8_t command = buffered[12] & 0x0f;
        if (version != 2) return error("PROXY v2: unsupported version");
        if (command != cmd_local && command != cmd_proxy) return error("PROXY v2: unknown command");
        // §2.2: for LOCAL "the family ... is ignored", so only PROXY checks it.
        if (command == cmd_proxy && buffered.size() > 13) {
            std::uint8_t family = buffered[13] >> 4;
            std::uint8_t transport = buffered[13] & 0x0f;
            if (family > fam_unix) return error("PROXY v2: unknown address family");
            if (transport > transport_dgram) return error("PROXY v2: unknown transport");
        }
    }
    if (buffered.size() < v2_fixed_length) return need_more();
    const std::size_t total = v2_fixed_length + read_be16(&buffered[14]);
    if (total > max_length) return error("PROXY v2: header longer than the limit");
    std::uint8_t command = buffered[12] & 0x0f;
    std::uint8_t family = buffered[13] >> 4;
    std::uint8_t transport = buffered[13] & 0x0f;
    std::size_t address_length = total - v2_fixed_length;
    // Length checks need no more bytes: refuse a short block at once.
    if (command == cmd_proxy && transport != transport_unspec) {
        if (family == fam_inet && address_length < 12) return error("PROXY v2: address block too short");
        if (family == fam_inet6 && address_length < 36) return error("PROXY v2: address block too short");
    }
    if (buffered.size() < total) return need_more();
    if (command == cmd_local) return local(2, total);
    // §2.2: UNSPEC family or transport, and AF_UNIX (no IP address to
    // report), fall back to the real connection endpoints.
    if (family == fam_unspec || family == fam_unix || transport == transport_unspec)
        return local(2, total);
    const std::uint8_t* block = buffered.data() + v2_fixed_length;
    net::IpAddress source;
    net::IpAddress destination;
    const std::uint8_t* ports;
    if (family == fam_inet) {
        source = net::IpAddress::v4(block[0], block[1], block[2], block[3]);
        destination = net::IpAddress::v4(block[4], block[5], block[6], block[7]);
        ports = block + 8;
    } else {
        source = net::IpAddress::v6(block);
        destination = net::IpAddress::v6(block + 16);
        ports = block + 32;
    }
    return done(2, total, source, read_be16(ports), destination, read_be16(ports + 2));
}

}  // namespace

Result parse(std::span<const std::uint8_t> buffered, std::size_t max_length) {
    if (buffered.empty()) return need_more();
    if (prefix_matches(buffered, v1_signature)) {
        if (buffered.size() < sizeof v1_signature) return need_more();
        return parse_v1(buffered);
    }
    if (prefix_matches(buffered, v2_signature)) {
        if (buffered.size() < sizeof v2_signature) return need_more();
        return parse_v2(buffered, max_length);
    }
    return error("not a PROXY protocol header");
}

}  // namespace proxyproto
