// libFuzzer target for ws::FrameScanner. Input: byte 0 picks the policy
// (direction, RSV1 allowed, message limit), byte 1 seeds the chunk sizes, the
// rest is the stream. The stream is scanned twice, delivered whole and in
// chunks; the two transcripts (frame starts, message ends, control frames,
// the error, bytes consumed, each at its stream offset) must be equal, and
// every step must respect the contract in protocol/websocket.h. Any
// difference or broken rule traps.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "protocol/websocket.h"

namespace {

struct Event {
    char kind;  // 'F' frame start, 'M' message end, 'C' control frame, 'E' error, 'N' consumed
    std::size_t offset;
    std::uint64_t a;  // F/C: payload length; E: close code
    std::uint64_t b;  // F: header byte 0 and mask bit; C: opcode

    bool operator==(const Event&) const = default;
};

void require(bool ok) {
    if (!ok) __builtin_trap();
}

// Chunk sizes from a small xorshift generator: mostly short chunks, now and
// then a long one, so that both headers and payloads get cut.
struct Chunks {
    std::uint32_t state;
    std::size_t next() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        return (state & 7) == 0 ? 1 + (state >> 8) % 4096 : 1 + (state >> 8) % 16;
    }
};

std::vector<Event> scan(const std::uint8_t* data, std::size_t size, ws::ScannerPolicy policy,
                        bool whole, std::uint32_t seed) {
    ws::FrameScanner scanner(policy);
    Chunks chunks{seed * 2654435761u | 1u};
    std::vector<Event> out;
    std::size_t head = 0;
    std::size_t received = 0;
    std::size_t frame_end = 0;
    while (received < size) {
        received = whole ? size : std::min(size, received + chunks.next());
        for (;;) {
            const std::size_t available = received - head;
            const std::span<const std::uint8_t> front(data + head, std::min(available, ws::kMaxControlFrame));
            const ws::Step s = scanner.step(front, available);
            if (s.kind == ws::Step::Kind::NeedMore) {
                require(available == 0 || scanner.at_frame_boundary());
                break;
            }
            if (s.kind == ws::Step::Kind::Error) {
                require(s.close_code == 1002 || s.close_code == 1009);
                require(!s.reason.empty());
                out.push_back({'E', head, s.close_code, 0});
                out.push_back({'N', head, 0, 0});
                return out;
            }
            require(s.bytes > 0 && s.bytes <= available);
            if (s.kind == ws::Step::Kind::ControlFrame) {
                require(head == frame_end);
                require(ws::is_control(s.header.opcode) && s.header.fin);
                require(s.header.payload_len <= ws::kMaxControlPayload);
                require(s.bytes == s.header.header_len + s.header.payload_len);
                require(s.bytes <= front.size());
                require(!s.message_end);
                frame_end = head + s.bytes;
                out.push_back({'C', head, s.header.payload_len, s.header.opcode});
            } else {
                if (s.frame_start) {
                    require(head == frame_end);
                    require(!ws::is_control(s.header.opcode));
                    require(s.header.masked == (policy.direction == ws::Direction::ClientToServer));
                    frame_end = head + s.header.header_len + s.header.payload_len;
                    out.push_back({'F', head, s.header.payload_len,
                                   (std::uint64_t{s.header.fin} << 7) | (std::uint64_t{s.header.rsv} << 4) |
                                       s.header.opcode});
                    if (policy.max_message_bytes != 0) {
                        require(s.header.payload_len <= policy.max_message_bytes);
                    }
                } else {
                    require(head < frame_end);
                }
                require(head + s.bytes <= frame_end);
            }
            head += s.bytes;
            require(scanner.at_frame_boundary() == (head == frame_end));
            if (s.message_end) {
                require(head == frame_end && !scanner.in_message());
                out.push_back({'M', head, 0, 0});
            }
        }
    }
    out.push_back({'N', head, 0, 0});
    return out;
}

constexpr std::uint64_t kLimits[8] = {0, 1, 10, 125, 126, 1000, 65536, 1 << 20};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const ws::ScannerPolicy policy{
        (data[0] & 1) ? ws::Direction::ServerToClient : ws::Direction::ClientToServer,
        (data[0] & 2) != 0,
        kLimits[(data[0] >> 2) & 7],
    };
    const std::uint32_t seed = data[1];
    data += 2;
    size -= 2;
    const std::vector<Event> whole = scan(data, size, policy, true, seed);
    const std::vector<Event> split = scan(data, size, policy, false, seed);
    require(whole == split);
    return 0;
}
