// RFC 6455 WebSocket protocol, pure: handshake checks, the accept key, frame
// header decoding and encoding, close payloads, and a resumable frame scanner
// that tells the relay what to do with the bytes of a stream without ever
// touching payload bytes of data frames. No sockets, no libevent, no globals.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "protocol/http1.h"

namespace ws {

enum class Opcode : std::uint8_t {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
};

inline bool is_control(std::uint8_t opcode) { return (opcode & 0x8) != 0; }

// Close codes (RFC 6455 §7.4.1) the proxy originates or checks.
namespace close_code {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t going_away = 1001;
inline constexpr std::uint16_t protocol_error = 1002;
inline constexpr std::uint16_t unsupported_data = 1003;
inline constexpr std::uint16_t no_status = 1005;      // never sent on the wire
inline constexpr std::uint16_t abnormal = 1006;       // never sent on the wire
inline constexpr std::uint16_t invalid_payload = 1007;
inline constexpr std::uint16_t policy_violation = 1008;
inline constexpr std::uint16_t message_too_big = 1009;
inline constexpr std::uint16_t internal_error = 1011;
inline constexpr std::uint16_t service_restart = 1012;
inline constexpr std::uint16_t try_again_later = 1013;
inline constexpr std::uint16_t bad_gateway = 1014;
inline constexpr std::uint16_t tls_handshake = 1015;  // never sent on the wire
}  // namespace close_code

// ---- Handshake (RFC 6455 §4) ----------------------------------------------

struct UpgradeCheck {
    bool is_upgrade = false;   // the request asks for a WebSocket upgrade at all
                               // (Upgrade header lists "websocket")
    bool ok = false;           // a valid RFC 6455 §4.2.1 opening handshake
    int http_status = 0;       // when !ok: 400, 405, 426 ...
    std::string_view reason;   // when !ok: static text for the log and body
    bool needs_version_header = false;  // 426: answer with Sec-WebSocket-Version: 13
    std::string_view key;      // Sec-WebSocket-Key as sent (when ok)
};

// Validates an opening handshake (§4.2.1): GET (else 405), HTTP/1.1 (else 400),
// Host present (400), Upgrade contains token "websocket" and Connection token
// "upgrade" (case-insensitive comma lists), Sec-WebSocket-Key base64 of exactly
// 16 bytes (400), Sec-WebSocket-Version 13 (else 426 + needs_version_header).
// A request whose Upgrade header does not list websocket has is_upgrade=false,
// ok=false, http_status=426 (the caller may proxy it as plain HTTP instead).
UpgradeCheck check_upgrade_request(const http1::RequestHead& request);

// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) (§4.2.2).
std::string compute_accept(std::string_view key);

struct ResponseCheck {
    bool ok = false;
    std::string_view reason;       // when !ok
    bool deflate_negotiated = false;  // Sec-WebSocket-Extensions names permessage-deflate
                                      // (the RSV1 bit is then legal both ways)
};

// Validates a back end's answer to a forwarded upgrade whose client key was
// <client_key>: status 101, Upgrade: websocket, Connection: upgrade, and a
// Sec-WebSocket-Accept equal to compute_accept(client_key) (§4.1).
ResponseCheck check_upgrade_response(const http1::ResponseHead& response,
                                     std::string_view client_key);

// ---- Frames (RFC 6455 §5) ---------------------------------------------------

inline constexpr std::size_t kMaxHeaderBytes = 14;           // 2 + 8 + 4
inline constexpr std::size_t kMaxControlPayload = 125;
inline constexpr std::size_t kMaxControlFrame = kMaxHeaderBytes + kMaxControlPayload;

struct FrameHeader {
    bool fin = false;
    std::uint8_t rsv = 0;        // the three RSV bits, as (byte0 >> 4) & 7
    std::uint8_t opcode = 0;
    bool masked = false;
    std::array<std::uint8_t, 4> mask_key{};
    std::uint64_t payload_len = 0;
    std::size_t header_len = 0;  // 2..14
};

enum class DecodeStatus { Ok, NeedMore, Error };

struct DecodeResult {
    DecodeStatus status = DecodeStatus::NeedMore;
    FrameHeader header;          // Ok
    std::uint16_t close_code = 0;  // Error: 1002 (or 1009 for a length with the top bit set)
    std::string_view reason;     // Error: static text
};

// Decodes the frame header at the start of <bytes>. Checks only what the
// header alone says: non-minimal length encodings are errors (1002), a 64-bit
// length with its most significant bit set is an error (1009, as DecodeResult
// says). Errors are reported as soon as the length bytes are present. Policy
// (masking, opcodes, RSV) is the scanner's job.
DecodeResult decode_frame_header(std::span<const std::uint8_t> bytes);

// Which way a stream flows: frames from a client must be masked, frames from
// a server must not (§5.1).
enum class Direction { ClientToServer, ServerToClient };

struct ScannerPolicy {
    Direction direction = Direction::ClientToServer;
    bool rsv1_allowed = false;             // permessage-deflate negotiated
    std::uint64_t max_message_bytes = 0;   // 0 = unlimited; else a message over it -> 1009
};

// What the relay must do next with the buffered bytes of one direction.
struct Step {
    enum class Kind {
        NeedMore,      // nothing can be decided until more bytes arrive
        Forward,       // move the next `bytes` bytes to the peer untouched
                       // (a data-frame header and/or part of its payload)
        ControlFrame,  // a whole control frame of `bytes` bytes is at the front of
                       // the buffer (header + payload, at most 139 bytes): the
                       // caller inspects it and forwards or consumes it
        Error,         // protocol violation: close with `close_code`
    };
    Kind kind = Kind::NeedMore;
    std::size_t bytes = 0;
    FrameHeader header;             // Forward (when it starts a frame) and ControlFrame
    bool frame_start = false;       // Forward: these bytes begin a new frame
    bool message_end = false;       // Forward/ControlFrame: after these bytes a data
                                    // message is complete (FIN frame fully passed)
    std::uint16_t close_code = 0;   // Error: 1002 or 1009
    std::string_view reason;        // Error: static text ("unmasked client frame" ...)
};

// Resumable scanner for one direction of a tunnel. The caller keeps the
// unconsumed bytes of the stream buffered and, for each step, passes:
//   <front>     the first min(available, kMaxControlFrame) buffered bytes,
//   <available> how many bytes are buffered in total.
// The scanner returns what to do with the front of the buffer and assumes the
// caller does it (removes `bytes` bytes for Forward and ControlFrame) before
// calling step() again. Payload bytes are never inspected except those of
// control frames.
//
// Enforces RFC 6455 §5: reserved opcodes (3-7, B-F) -> 1002; control frames
// must have FIN set and at most 125 payload bytes -> 1002; masking by
// direction -> 1002; RSV bits other than RSV1-with-deflate -> 1002; a
// continuation frame with no message in progress, or a new data frame while
// a fragmented message is in progress -> 1002; a message (all its fragments)
// longer than max_message_bytes -> 1009 (decided from frame headers, before
// the payload is forwarded).
class FrameScanner {
public:
    explicit FrameScanner(ScannerPolicy policy) : policy_(policy) {}

    Step step(std::span<const std::uint8_t> front, std::size_t available);

    // True when the next byte of the stream starts a new frame: the only place
    // where the proxy may insert a frame of its own (§5.4).
    bool at_frame_boundary() const { return payload_remaining_ == 0 && !in_frame_; }
    // True while a data message has started and not finished: at a frame
    // boundary, exactly when a fragmented message awaits its continuation.
    bool in_message() const { return in_message_; }

private:
    ScannerPolicy policy_;
    bool in_frame_ = false;               // a data-frame header was forwarded and payload is due
    std::uint64_t payload_remaining_ = 0; // payload bytes of the current data frame still to forward
    bool current_fin_ = false;            // FIN bit of the current data frame
    bool in_message_ = false;             // a data message is in progress (fragments pending)
    std::uint64_t message_bytes_ = 0;     // payload bytes of the current message so far
};

struct ClosePayload {
    bool ok = false;
    std::uint16_t code = 0;          // close_code::no_status when the payload is empty
    std::string_view reason;         // UTF-8 text (view into the payload)
    std::string_view error;          // when !ok: why (payload of 1 byte, bad code, bad UTF-8)
};

// Parses a close frame's (unmasked) payload (§5.5.1, §7.4): empty, or a
// 2-byte code followed by UTF-8. Codes below 1000, 1004-1006, 1015, 1016-2999
// unassigned ones (per §7.4.2: 1000-1003, 1007-1014 valid; 3000-4999 valid)
// are rejected.
ClosePayload parse_close_payload(std::span<const std::uint8_t> payload);

// True when <bytes> is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool valid_utf8(std::span<const std::uint8_t> bytes);

// XORs <data> in place with <mask_key>, starting at mask offset <offset>.
void apply_mask(std::span<std::uint8_t> data, std::array<std::uint8_t, 4> mask_key,
                std::size_t offset = 0);

// Encodes a control frame (FIN=1) with <payload> (<= 125 bytes) into <out>
// (at least kMaxControlFrame bytes); masked with <mask_key> when given (frames
// towards a back end), unmasked otherwise (towards a client). Returns the
// number of bytes written; 0 (nothing written) when <opcode> is not a control
// opcode or <payload> exceeds 125 bytes.
std::size_t encode_control_frame(std::uint8_t* out, Opcode opcode,
                                 std::span<const std::uint8_t> payload,
                                 std::optional<std::array<std::uint8_t, 4>> mask_key);

// Encodes a close frame with <code> and <reason> (truncated to fit 125 bytes
// at a UTF-8 boundary). Returns the number of bytes written to <out>.
std::size_t encode_close_frame(std::uint8_t* out, std::uint16_t code, std::string_view reason,
                               std::optional<std::array<std::uint8_t, 4>> mask_key);

}  // namespace ws
