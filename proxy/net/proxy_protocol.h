// The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and
// 2) that a trusted load balancer sends before the client's first byte,
// pure: the caller passes everything buffered so far and learns whether the
// header is complete, incomplete, or invalid. No sockets, no libevent.
//
// A listener configured for the PROXY protocol requires it (§2: the
// receiver "MUST not try to guess whether the protocol header is present"):
// anything that is not a valid header is an error, and the connection must
// be closed without reading further.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace proxyproto {

// §2.1: the longest valid version 1 line, CRLF included.
inline constexpr std::size_t max_v1_length = 107;
// §2.2: the fixed part of a version 2 header; the whole header is
// 16 + the length field, so at most 16 + 65535 bytes.
inline constexpr std::size_t v2_fixed_length = 16;
inline constexpr std::size_t max_v2_length = v2_fixed_length + 65535;

enum class Status : std::uint8_t {
    NeedMore,  // every byte so far is a valid prefix: call again with more
    Error,     // not a valid header: close the connection
    Done,      // a complete header of <consumed> bytes
};

struct Result {
    Status status = Status::NeedMore;
    std::string_view error;  // Status::Error: static text for the log
    std::size_t consumed = 0;  // Status::Done: bytes to drop before the client's data
    int version = 0;           // Status::Done: 1 or 2
    // Status::Done: true when the header carries no usable address (v1
    // UNKNOWN, v2 LOCAL, v2 AF_UNSPEC, AF_UNIX or UNSPEC transport): use the
    // socket's own peer address, as §2.1 and §2.2 require.
    bool local = false;
    // Status::Done and !local: the original client and the address it
    // connected to, as AF_INET or AF_INET6 socket addresses (ports in
    // network order), plus the client address as text ("192.0.2.1",
    // "2001:db8::1") for logs and X-Forwarded-For.
    sockaddr_storage source{};
    sockaddr_storage destination{};
    std::string source_text;
    std::uint16_t source_port = 0;  // host order
};

// Parses the header at the start of <buffered>, all bytes received so far.
// Stateless between calls: call again with the longer buffer after
// NeedMore. Errors are reported as early as the bytes allow (a wrong
// signature byte, a v1 line with no CRLF within 107 bytes, a v2 length
// above <max_length>), so a client that is not speaking the protocol is
// refused at once instead of at the timeout.
//
// <max_length> caps a version 2 header (fixed part + addresses + TLVs);
// the protocol allows 65551 bytes, far more than any real sender uses.
// Version 2 TLVs (§2.2.1) are skipped unread; the address block must be at
// least as long as its family requires.
Result parse(std::span<const std::uint8_t> buffered, std::size_t max_length = max_v2_length);

}  // namespace proxyproto
