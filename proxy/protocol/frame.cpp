// RFC 6455 §5 framing: header decoding, the resumable frame scanner, close
// payloads (§5.5.1, §7.4), UTF-8 validation (§8.1) and control-frame encoding.
#include <algorithm>
#include <cstring>

#include "protocol/websocket.h"

namespace ws {

namespace {

constexpr std::uint8_t kFinBit = 0x80;
constexpr std::uint8_t kRsv1 = 0x4;  // in FrameHeader::rsv
constexpr std::uint8_t kMaskBit = 0x80;

bool is_reserved_opcode(std::uint8_t opcode) {
    return (opcode >= 0x3 && opcode <= 0x7) || opcode >= 0xB;
}

Step error_step(std::uint16_t code, std::string_view reason) {
    Step s;
    s.kind = Step::Kind::Error;
    s.close_code = code;
    s.reason = reason;
    return s;
}

// Close codes a peer may put on the wire (§7.4.1, §7.4.2, IANA registry):
// 1000-1003 and 1007-1014 are defined; 3000-4999 belong to libraries and
// applications. 1004 is reserved, 1005/1006/1015 must never be sent, the
// rest of 1000-2999 is unassigned and below 1000 or from 5000 up is unused.
bool valid_close_code(std::uint16_t code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

// Writes a frame header for a payload of <len> <= 125 bytes.
std::size_t write_short_header(std::uint8_t* out, std::uint8_t opcode, std::size_t len,
                               const std::optional<std::array<std::uint8_t, 4>>& mask_key) {
    out[0] = static_cast<std::uint8_t>(kFinBit | opcode);
    out[1] = static_cast<std::uint8_t>(len | (mask_key ? kMaskBit : 0));
    if (!mask_key) return 2;
    std::memcpy(out + 2, mask_key->data(), 4);
    return 6;
}

}  // namespace

DecodeResult decode_frame_header(std::span<const std::uint8_t> bytes) {
    DecodeResult r;
    if (bytes.size() < 2) return r;
    FrameHeader& h = r.header;
    h.fin = (bytes[0] & kFinBit) != 0;
    h.rsv = static_cast<std::uint8_t>((bytes[0] >> 4) & 0x7);
    h.opcode = bytes[0] & 0x0F;
    h.masked = (bytes[1] & kMaskBit) != 0;
    const std::uint8_t len7 = bytes[1] & 0x7F;

    std::size_t pos = 2;
    if (len7 < 126) {
        h.payload_len = len7;
    } else if (len7 == 126) {
        if (bytes.size() < 4) return r;
        h.payload_len = (std::uint64_t{bytes[2]} << 8) | bytes[3];
        pos = 4;
        // §5.2: "the minimal number of bytes MUST be used to encode the length".
        if (h.payload_len < 126) {
            r.status = DecodeStatus::Error;
            r.close_code = close_code::protocol_error;
            r.reason = "non-minimal payload length";
            return r;
        }
    } else {
        if (bytes.size() < 10) return r;
        std::uint64_t len = 0;
        for (std::size_t i = 2; i < 10; ++i) len = (len << 8) | bytes[i];
        pos = 10;
        // §5.2: the most significant bit of a 64-bit length MUST be 0. Such
        // a length cannot be handled anyway, hence "too big" rather than 1002.
        if ((len >> 63) != 0) {
            r.status = DecodeStatus::Error;
            r.close_code = close_code::message_too_big;
            r.reason = "payload length with most significant bit set";
            return r;
        }
        if (len <= 0xFFFF) {
            r.status = DecodeStatus::Error;
            r.close_code = close_code::protocol_error;
            r.reason = "non-minimal payload length";
            return r;
        }
        h.payload_len = len;
    }

    if (h.masked) {
        if (bytes.size() < pos + 4) return r;
        std::memcpy(h.mask_key.data(), bytes.data() + pos, 4);
        pos += 4;
    }
    h.header_len = pos;
    r.status = DecodeStatus::Ok;
    return r;
}

Step FrameScanner::step(std::span<const std::uint8_t> front, std::size_t available) {
    Step s;
    if (available == 0) return s;

    if (in_frame_) {
        // Inside a data frame's payload: pass bytes through without looking.
        const std::uint64_t n = std::min<std::uint64_t>(payload_remaining_, available);
        payload_remaining_ -= n;
        s.kind = Step::Kind::Forward;
        s.bytes = static_cast<std::size_t>(n);
        if (payload_remaining_ == 0) {
            in_frame_ = false;
            s.message_end = current_fin_;
            if (current_fin_) {
                in_message_ = false;
                message_bytes_ = 0;
            }
        }
        return s;
    }

    const DecodeResult d = decode_frame_header(front);
    if (d.status == DecodeStatus::NeedMore) return s;
    if (d.status == DecodeStatus::Error) return error_step(d.close_code, d.reason);
    const FrameHeader& h = d.header;
    const bool control = is_control(h.opcode);

    // Every check happens before any state changes, so a rejected frame is
    // rejected again, identically, if step() is called once more.
    if (is_reserved_opcode(h.opcode)) return error_step(close_code::protocol_error, "reserved opcode");
    // §5.2: RSV bits need a negotiated extension. permessage-deflate (RFC 7692
    // §6) defines RSV1 for the first frame of a data message only.
    const bool rsv1_ok = policy_.rsv1_allowed && !control &&
                         h.opcode != static_cast<std::uint8_t>(Opcode::Continuation);
    if ((h.rsv & ~(rsv1_ok ? kRsv1 : 0)) != 0) {
        return error_step(close_code::protocol_error, "reserved bits set");
    }
    // §5.1: a server closes on an unmasked client frame, a client on a masked
    // server frame.
    if (policy_.direction == Direction::ClientToServer && !h.masked) {
        return error_step(close_code::protocol_error, "unmasked client frame");
    }
    if (policy_.direction == Direction::ServerToClient && h.masked) {
        return error_step(close_code::protocol_error, "masked server frame");
    }

    if (control) {
        // §5.5: control frames are never fragmented and carry <= 125 bytes;
        // they may arrive between the fragments of a message (§5.4) and leave
        // its state untouched.
        if (!h.fin) return error_step(close_code::protocol_error, "fragmented control frame");
        if (h.payload_len > kMaxControlPayload) {
            return error_step(close_code::protocol_error, "control frame too long");
        }
        const std::size_t total = h.header_len + static_cast<std::size_t>(h.payload_len);
        if (available < total) return s;
        s.kind = Step::Kind::ControlFrame;
        s.bytes = total;
        s.header = h;
        return s;
    }

    // §5.4: a continuation frame continues a message in progress; a Text or
    // Binary frame starts one and is illegal while another is unfinished.
    const bool continuation = h.opcode == static_cast<std::uint8_t>(Opcode::Continuation);
    if (continuation && !in_message_) {
        return error_step(close_code::protocol_error, "unexpected continuation frame");
    }
    if (!continuation && in_message_) {
        return error_step(close_code::protocol_error, "expected continuation frame");
    }
    // With a limit, so_far <= max_message_bytes (this check let it grow), so
    // the subtraction cannot wrap.
    const std::uint64_t so_far = continuation ? message_bytes_ : 0;
    if (policy_.max_message_bytes != 0 && h.payload_len > policy_.max_message_bytes - so_far) {
        return error_step(close_code::message_too_big, "message too big");
    }

    // Saturating: with no limit, a long enough stream of fragments could
    // otherwise wrap the counter.
    message_bytes_ = h.payload_len > UINT64_MAX - so_far ? UINT64_MAX : so_far + h.payload_len;
    in_message_ = true;
    current_fin_ = h.fin;

    // header_len <= front.size() <= available, so the header goes out whole.
    const std::uint64_t payload_now =
        std::min<std::uint64_t>(h.payload_len, available - h.header_len);
    payload_remaining_ = h.payload_len - payload_now;
    s.kind = Step::Kind::Forward;
    s.bytes = h.header_len + static_cast<std::size_t>(payload_now);
    s.header = h;
    s.frame_start = true;
    if (payload_remaining_ == 0) {
        s.message_end = h.fin;
        if (h.fin) {
            in_message_ = false;
            message_bytes_ = 0;
        }
    } else {
        in_frame_ = true;
    }
    return s;
}

bool valid_utf8(std::span<const std::uint8_t> bytes) {
    std::size_t i = 0;
    const std::size_t n = bytes.size();
    while (i < n) {
        const std::uint8_t b = bytes[i];
        if (b < 0x80) {
            ++i;
            continue;
        }
        // RFC 3629 §4: the lead byte fixes the length; the second byte's range
        // excludes overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4).
        std::size_t len = 0;
        std::uint8_t lo = 0x80;
        std::uint8_t hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            len = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            len = 3;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            len = 4;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        } else {
            return false;  // 80-BF stray continuation, C0/C1 overlong, F5-FF
        }
        if (n - i < len) return false;
        if (bytes[i + 1] < lo || bytes[i + 1] > hi) return false;
        for (std::size_t k = 2; k < len; ++k) {
            if ((bytes[i + k] & 0xC0) != 0x80) return false;
        }
        i += len;
    }
    return true;
}

ClosePayload parse_close_payload(std::span<const std::uint8_t> payload) {
    ClosePayload p;
    if (payload.empty()) {
        p.ok = true;
        p.code = close_code::no_status;
        return p;
    }
    if (payload.size() == 1) {
        p.error = "close payload of 1 byte";
        return p;
    }
    p.code = static_cast<std::uint16_t>((payload[0] << 8) | payload[1]);
    if (!valid_close_code(p.code)) {
        p.error = "invalid close code";
        return p;
    }
    const auto text = payload.subspan(2);
    if (!valid_utf8(text)) {
        p.error = "close reason not UTF-8";
        return p;
    }
    p.reason = std::string_view(reinterpret_cast<const char*>(text.data()), text.size());
    p.ok = true;
    return p;
}

void apply_mask(std::span<std::uint8_t> data, std::array<std::uint8_t, 4> mask_key,
                std::size_t offset) {
    for (std::size_t i = 0; i < data.size(); ++i) data[i] ^= mask_key[(offset + i) & 3];
}

std::size_t encode_control_frame(std::uint8_t* out, Opcode opcode,
                                 std::span<const std::uint8_t> payload,
                                 std::optional<std::array<std::uint8_t, 4>> mask_key) {
    const auto op = static_cast<std::uint8_t>(opcode);
    if (!is_control(op) || payload.size() > kMaxControlPayload) return 0;
    const std::size_t header = write_short_header(out, op, payload.size(), mask_key);
    if (!payload.empty()) std::memcpy(out + header, payload.data(), payload.size());
    if (mask_key) apply_mask({out + header, payload.size()}, *mask_key);
    return header + payload.size();
}

std::size_t encode_close_frame(std::uint8_t* out, std::uint16_t code, std::string_view reason,
                               std::optional<std::array<std::uint8_t, 4>> mask_key) {
    constexpr std::size_t kMaxReason = kMaxControlPayload - 2;
    std::size_t len = std::min(reason.size(), kMaxReason);
    // Back up over continuation bytes so the cut falls before a lead byte.
    if (len < reason.size()) {
        while (len > 0 && (static_cast<std::uint8_t>(reason[len]) & 0xC0) == 0x80) --len;
    }
    const std::size_t header = write_short_header(out, static_cast<std::uint8_t>(Opcode::Close),
                                                  2 + len, mask_key);
    std::uint8_t* payload = out + header;
    payload[0] = static_cast<std::uint8_t>(code >> 8);
    payload[1] = static_cast<std::uint8_t>(code & 0xFF);
    if (len != 0) std::memcpy(payload + 2, reason.data(), len);
    if (mask_key) apply_mask({payload, 2 + len}, *mask_key);
    return header + 2 + len;
}

}  // namespace ws
