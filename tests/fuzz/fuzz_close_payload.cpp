// libFuzzer target for ws::parse_close_payload, ws::valid_utf8 and
// ws::encode_close_frame. The input is a close payload. valid_utf8 is
// compared with a reference decoder written from RFC 3629 §3 (code point
// arithmetic instead of byte ranges); an accepted payload is re-encoded,
// masked and unmasked, and must parse back to the same code and a prefix of
// the reason cut at a character boundary. Any difference traps.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "protocol/websocket.h"

namespace {

void require(bool ok) {
    if (!ok) __builtin_trap();
}

bool reference_utf8(const std::uint8_t* p, std::size_t n) {
    std::size_t i = 0;
    while (i < n) {
        const std::uint8_t b = p[i];
        std::size_t len;
        std::uint32_t cp;
        if (b < 0x80) {
            len = 1;
            cp = b;
        } else if ((b & 0xE0) == 0xC0) {
            len = 2;
            cp = b & 0x1F;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3;
            cp = b & 0x0F;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4;
            cp = b & 0x07;
        } else {
            return false;
        }
        if (n - i < len) return false;
        for (std::size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        static constexpr std::uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

void round_trip(const ws::ClosePayload& p, std::optional<std::array<std::uint8_t, 4>> mask) {
    std::uint8_t out[ws::kMaxControlFrame];
    const std::size_t n = ws::encode_close_frame(out, p.code, p.reason, mask);
    const ws::DecodeResult d = ws::decode_frame_header({out, n});
    require(d.status == ws::DecodeStatus::Ok);
    require(d.header.fin && d.header.opcode == 0x8 && d.header.masked == mask.has_value());
    require(d.header.payload_len <= ws::kMaxControlPayload);
    require(d.header.header_len + d.header.payload_len == n);
    std::span<std::uint8_t> payload(out + d.header.header_len, n - d.header.header_len);
    if (mask) ws::apply_mask(payload, d.header.mask_key);
    const ws::ClosePayload back = ws::parse_close_payload(payload);
    require(back.ok && back.code == p.code);
    require(p.reason.substr(0, back.reason.size()) == back.reason);
    // Truncated only when needed, and by less than one character.
    require(back.reason.size() == p.reason.size() || back.reason.size() + 4 > ws::kMaxControlPayload - 2);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> payload(data, size);
    require(ws::valid_utf8(payload) == reference_utf8(data, size));

    const ws::ClosePayload p = ws::parse_close_payload(payload);
    require(p.ok == p.error.empty());
    if (size == 0) {
        require(p.ok && p.code == ws::close_code::no_status);
        return 0;
    }
    if (!p.ok) {
        require(size == 1 || p.error == "invalid close code" || !reference_utf8(data + 2, size - 2));
        return 0;
    }
    require(size >= 2);
    require(p.code == ((data[0] << 8) | data[1]));
    require(reference_utf8(data + 2, size - 2));
    require(p.reason.size() == size - 2 &&
            reinterpret_cast<const std::uint8_t*>(p.reason.data()) == data + 2);
    round_trip(p, std::nullopt);
    round_trip(p, std::array<std::uint8_t, 4>{data[0], data[1], static_cast<std::uint8_t>(size), 0x5A});
    return 0;
}
