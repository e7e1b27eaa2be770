// Small RFC 6455 helpers shared by the benchmark's load generator and echo
// back end. Deliberately independent of proxy/: the benchmark must not share
// code (or bugs) with the proxy it measures.
#pragma once

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/socket.h>
#include <time.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace wsbench {

enum Opcode : std::uint8_t {
    kContinuation = 0x0,
    kText = 0x1,
    kBinary = 0x2,
    kClose = 0x8,
    kPing = 0x9,
    kPong = 0xA,
};

// Largest header: 2 bytes + 8-byte extended length + 4-byte masking key (§5.2).
constexpr std::size_t kMaxHeader = 14;

inline std::uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Sec-WebSocket-Accept for <key> (RFC 6455 §4.2.2 step 5.4): base64(SHA-1(key + GUID)).
inline std::string accept_key(std::string_view key) {
    static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    std::string joined;
    joined.reserve(key.size() + guid.size());
    joined.append(key);
    joined.append(guid);
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(joined.data()), joined.size(), digest);
    unsigned char out[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
    const int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
    return std::string(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
}

inline std::string base64(const unsigned char* data, std::size_t n) {
    std::string out(4 * ((n + 2) / 3) + 1, '\0');
    const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
    out.resize(static_cast<std::size_t>(len));
    return out;
}

struct FrameHeader {
    bool fin = false;
    std::uint8_t rsv = 0;
    std::uint8_t opcode = 0;
    bool masked = false;
    std::uint8_t mask[4] = {0, 0, 0, 0};
    std::uint64_t length = 0;
    std::size_t header_length = 0;
};

// Decodes the frame header at <p> (<n> bytes available), RFC 6455 §5.2.
// Returns 1 when <out> is complete, 0 when more bytes are needed, -1 when the
// 64-bit length has its most significant bit set.
inline int decode_header(const std::uint8_t* p, std::size_t n, FrameHeader& out) {
    if (n < 2) return 0;
    out.fin = (p[0] & 0x80) != 0;
    out.rsv = static_cast<std::uint8_t>((p[0] >> 4) & 0x7);
    out.opcode = p[0] & 0x0F;
    out.masked = (p[1] & 0x80) != 0;
    std::uint64_t len = p[1] & 0x7F;
    std::size_t pos = 2;
    if (len == 126) {
        if (n < 4) return 0;
        len = (std::uint64_t{p[2]} << 8) | p[3];
        pos = 4;
    } else if (len == 127) {
        if (n < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
        if (len >> 63) return -1;
        pos = 10;
    }
    if (out.masked) {
        if (n < pos + 4) return 0;
        std::memcpy(out.mask, p + pos, 4);
        pos += 4;
    }
    out.length = len;
    out.header_length = pos;
    return 1;
}

// Writes a final frame header to <out> (kMaxHeader bytes of room) and returns
// its length. A non-null <mask> sets the MASK bit and appends the key.
inline std::size_t encode_header(std::uint8_t* out, std::uint8_t opcode, std::uint64_t length,
                                 const std::uint8_t* mask) {
    out[0] = static_cast<std::uint8_t>(0x80 | opcode);
    const std::uint8_t mask_bit = mask ? 0x80 : 0x00;
    std::size_t pos;
    if (length < 126) {
        out[1] = static_cast<std::uint8_t>(mask_bit | length);
        pos = 2;
    } else if (length < 65536) {
        out[1] = static_cast<std::uint8_t>(mask_bit | 126);
        out[2] = static_cast<std::uint8_t>(length >> 8);
        out[3] = static_cast<std::uint8_t>(length);
        pos = 4;
    } else {
        out[1] = static_cast<std::uint8_t>(mask_bit | 127);
        for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<std::uint8_t>(length >> (56 - 8 * i));
        pos = 10;
    }
    if (mask) {
        std::memcpy(out + pos, mask, 4);
        pos += 4;
    }
    return pos;
}

// XORs <n> bytes at <p> with the 4-byte <mask> (§5.3), eight bytes at a time.
inline void apply_mask(std::uint8_t* p, std::size_t n, const std::uint8_t mask[4]) {
    std::uint64_t wide;
    std::uint8_t m8[8];
    for (int i = 0; i < 8; ++i) m8[i] = mask[i & 3];
    std::memcpy(&wide, m8, 8);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, p + i, 8);
        w ^= wide;
        std::memcpy(p + i, &w, 8);
    }
    for (; i < n; ++i) p[i] ^= mask[i & 3];
}

// Case-insensitive search for header <name> in the raw head <head>; returns
// its value with surrounding spaces trimmed, or an empty view.
inline std::string_view find_header(std::string_view head, std::string_view name) {
    std::size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos + 2 < head.size()) {
        const std::size_t start = pos + 2;
        const std::size_t end = head.find("\r\n", start);
        const std::string_view line = head.substr(start, end == std::string_view::npos ? head.npos : end - start);
        const std::size_t colon = line.find(':');
        if (colon == name.size()) {
            bool same = true;
            for (std::size_t i = 0; i < colon && same; ++i) {
                char a = line[i], b = name[i];
                if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
                if (b >= 'A' && b <= 'Z') b = static_cast<char>(b - 'A' + 'a');
                same = a == b;
            }
            if (same) {
                std::string_view value = line.substr(colon + 1);
                while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
                while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
                return value;
            }
        }
        pos = end;
    }
    return {};
}

// xorshift64*: cheap, deterministic pseudo-random numbers for keys, masks and filler.
struct Rng {
    std::uint64_t state;
    explicit Rng(std::uint64_t seed) : state(seed ? seed : 0x9E3779B97F4A7C15ull) {}
    std::uint64_t next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 0x2545F4914F6CDD1Dull;
    }
};

}  // namespace wsbench
