// RFC 6455 §5 framing: header decoding, the frame scanner (fed whole and split
// at every byte boundary), close payloads, UTF-8, masking and encoders.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "protocol/websocket.h"

namespace {

using Bytes = std::vector<std::uint8_t>;
using ws::Direction;
using ws::Step;

Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

Bytes text(std::string_view s) { return Bytes(s.begin(), s.end()); }

// RFC 6455 §5.7 examples.
const Bytes kHello = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
const Bytes kMaskedHello = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
const Bytes kHel = {0x01, 0x03, 0x48, 0x65, 0x6c};
const Bytes kLo = {0x80, 0x02, 0x6c, 0x6f};
const Bytes kPingHello = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
const Bytes kMaskedPongHello = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
constexpr std::array<std::uint8_t, 4> kMask = {0x37, 0xfa, 0x21, 0x3d};

Bytes binary_256() {
    Bytes b = {0x82, 0x7E, 0x01, 0x00};
    for (int i = 0; i < 256; ++i) b.push_back(static_cast<std::uint8_t>(i));
    return b;
}

Bytes binary_64k() {
    Bytes b = {0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00};
    b.resize(b.size() + 65536, 0xAB);
    return b;
}

// A frame with arbitrary first byte, <len>-byte payload of 'x', masked with
// kMask when <masked>, using the minimal length encoding.
Bytes frame(std::uint8_t byte0, std::size_t len, bool masked) {
    Bytes b = {byte0};
    const std::uint8_t m = masked ? 0x80 : 0x00;
    if (len < 126) {
        b.push_back(static_cast<std::uint8_t>(m | len));
    } else if (len <= 0xFFFF) {
        b.push_back(m | 126);
        b.push_back(static_cast<std::uint8_t>(len >> 8));
        b.push_back(static_cast<std::uint8_t>(len));
    } else {
        b.push_back(m | 127);
        for (int shift = 56; shift >= 0; shift -= 8) b.push_back(static_cast<std::uint8_t>(len >> shift));
    }
    if (masked) b.insert(b.end(), kMask.begin(), kMask.end());
    b.resize(b.size() + len, 'x');
    return b;
}

// Drives a scanner like the relay does: the stream arrives in chunks ending
// at <cuts> (and at its end); after each chunk, step() runs until NeedMore
// and the consumed bytes leave the buffer. Returns a transcript that does not
// depend on how the stream was cut: frame starts with their header, message
// ends, control frames and the error, each at its stream offset, and the
// number of bytes consumed. Forward steps that only continue a payload leave
// no line (their sizes depend on the cuts), but their offsets are checked.
std::string scan(const Bytes& stream, ws::ScannerPolicy policy, const std::vector<std::size_t>& cuts) {
    ws::FrameScanner scanner(policy);
    std::string out;
    char line[160];
    std::size_t head = 0;      // first unconsumed byte
    std::size_t received = 0;  // bytes delivered so far
    std::size_t frame_end = 0; // where the current data frame ends
    bool done = false;
    std::vector<std::size_t> ends = cuts;
    ends.push_back(stream.size());
    for (std::size_t end : ends) {
        received = end;
        while (!done) {
            const std::size_t available = received - head;
            const std::span<const std::uint8_t> front(stream.data() + head,
                                                      std::min(available, ws::kMaxControlFrame));
            const Step s = scanner.step(front, available);
            if (s.kind == Step::Kind::NeedMore) {
                // NeedMore only when no decision can be made: nothing buffered,
                // or a header or control frame incomplete at a frame boundary.
                REQUIRE((available == 0 || scanner.at_frame_boundary()));
                break;
            }
            if (s.kind == Step::Kind::Error) {
                std::snprintf(line, sizeof line, "error@%zu %u %.*s\n", head, s.close_code,
                              static_cast<int>(s.reason.size()), s.reason.data());
                out += line;
                // The verdict stands until the caller acts on it.
                const Step again = scanner.step(front, available);
                REQUIRE(again.kind == Step::Kind::Error);
                REQUIRE(again.close_code == s.close_code);
                done = true;
                break;
            }
            REQUIRE(s.bytes > 0);
            REQUIRE(s.bytes <= available);
            if (s.kind == Step::Kind::ControlFrame) {
                REQUIRE(s.bytes == s.header.header_len + s.header.payload_len);
                REQUIRE_FALSE(s.message_end);
                REQUIRE(head == frame_end);
                frame_end = head + s.bytes;
                std::snprintf(line, sizeof line, "control@%zu op=%u len=%llu bytes=%zu\n", head,
                              s.header.opcode, static_cast<unsigned long long>(s.header.payload_len),
                              s.bytes);
                out += line;
            } else {
                if (s.frame_start) {
                    REQUIRE(head == frame_end);
                    frame_end = head + s.header.header_len + s.header.payload_len;
                    std::snprintf(line, sizeof line, "frame@%zu fin=%d rsv=%u op=%u masked=%d len=%llu hl=%zu\n",
                                  head, s.header.fin, s.header.rsv, s.header.opcode, s.header.masked,
                                  static_cast<unsigned long long>(s.header.payload_len),
                                  s.header.header_len);
                    out += line;
                } else {
                    REQUIRE(head < frame_end);
                }
                REQUIRE(head + s.bytes <= frame_end);
            }
            head += s.bytes;
            REQUIRE(scanner.at_frame_boundary() ==
                    (s.kind == Step::Kind::ControlFrame || head == frame_end));
            if (s.message_end) {
                REQUIRE(head == frame_end);
                REQUIRE_FALSE(scanner.in_message());
                std::snprintf(line, sizeof line, "message_end@%zu\n", head);
                out += line;
            }
        }
        if (done) break;
    }
    std::snprintf(line, sizeof line, "consumed %zu\n", head);
    out += line;
    return out;
}

std::string scan_whole(const Bytes& stream, ws::ScannerPolicy policy) { return scan(stream, policy, {}); }

// Asserts that every way of delivering <stream> gives the transcript of
// delivering it whole: cut once at every byte boundary, and byte by byte.
void check_split_invariant(const Bytes& stream, ws::ScannerPolicy policy) {
    const std::string whole = scan_whole(stream, policy);
    for (std::size_t cut = 1; cut < stream.size(); ++cut) {
        const std::string split = scan(stream, policy, {cut});
        if (split != whole) {
            CAPTURE(cut);
            REQUIRE(split == whole);
        }
    }
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < stream.size(); ++i) every.push_back(i);
    CHECK(scan(stream, policy, every) == whole);
}

ws::ScannerPolicy client(std::uint64_t max = 0, bool rsv1 = false) {
    return {Direction::ClientToServer, rsv1, max};
}
ws::ScannerPolicy server(std::uint64_t max = 0, bool rsv1 = false) {
    return {Direction::ServerToClient, rsv1, max};
}

Step step_whole(ws::FrameScanner& s, const Bytes& b) {
    return s.step({b.data(), std::min(b.size(), ws::kMaxControlFrame)}, b.size());
}

}  // namespace

TEST_CASE("decode_frame_header: RFC 6455 §5.7 examples") {
    SUBCASE("single-frame unmasked text") {
        const ws::DecodeResult r = ws::decode_frame_header(kHello);
        REQUIRE(r.status == ws::DecodeStatus::Ok);
        CHECK(r.header.fin);
        CHECK(r.header.rsv == 0);
        CHECK(r.header.opcode == 0x1);
        CHECK_FALSE(r.header.masked);
        CHECK(r.header.payload_len == 5);
        CHECK(r.header.header_len == 2);
    }
    SUBCASE("single-frame masked text") {
        const ws::DecodeResult r = ws::decode_frame_header(kMaskedHello);
        REQUIRE(r.status == ws::DecodeStatus::Ok);
        CHECK(r.header.masked);
        CHECK(r.header.mask_key == kMask);
        CHECK(r.header.payload_len == 5);
        CHECK(r.header.header_len == 6);
        Bytes payload(kMaskedHello.begin() + 6, kMaskedHello.end());
        ws::apply_mask(payload, r.header.mask_key);
        CHECK(payload == text("Hello"));
    }
    SUBCASE("fragmented unmasked text") {
        const ws::DecodeResult a = ws::decode_frame_header(kHel);
        REQUIRE(a.status == ws::DecodeStatus::Ok);
        CHECK_FALSE(a.header.fin);
        CHECK(a.header.opcode == 0x1);
        CHECK(a.header.payload_len == 3);
        const ws::DecodeResult b = ws::decode_frame_header(kLo);
        REQUIRE(b.status == ws::DecodeStatus::Ok);
        CHECK(b.header.fin);
        CHECK(b.header.opcode == 0x0);
        CHECK(b.header.payload_len == 2);
    }
    SUBCASE("ping and masked pong") {
        const ws::DecodeResult ping = ws::decode_frame_header(kPingHello);
        REQUIRE(ping.status == ws::DecodeStatus::Ok);
        CHECK(ping.header.opcode == 0x9);
        CHECK(ping.header.payload_len == 5);
        const ws::DecodeResult pong = ws::decode_frame_header(kMaskedPongHello);
        REQUIRE(pong.status == ws::DecodeStatus::Ok);
        CHECK(pong.header.opcode == 0xA);
        CHECK(pong.header.masked);
        CHECK(pong.header.header_len == 6);
    }
    SUBCASE("256-byte and 64 KiB binary") {
        const ws::DecodeResult a = ws::decode_frame_header(binary_256());
        REQUIRE(a.status == ws::DecodeStatus::Ok);
        CHECK(a.header.opcode == 0x2);
        CHECK(a.header.payload_len == 256);
        CHECK(a.header.header_len == 4);
        const ws::DecodeResult b = ws::decode_frame_header(binary_64k());
        REQUIRE(b.status == ws::DecodeStatus::Ok);
        CHECK(b.header.payload_len == 65536);
        CHECK(b.header.header_len == 10);
    }
}

TEST_CASE("decode_frame_header: every strict prefix of a header needs more") {
    for (const Bytes& f : {kHello, kMaskedHello, binary_256(), binary_64k(), frame(0x82, 70000, true)}) {
        const std::size_t header_len = ws::decode_frame_header(f).header.header_len;
        REQUIRE(header_len >= 2);
        for (std::size_t n = 0; n < header_len; ++n) {
            CAPTURE(n);
            CHECK(ws::decode_frame_header({f.data(), n}).status == ws::DecodeStatus::NeedMore);
        }
        CHECK(ws::decode_frame_header({f.data(), header_len}).status == ws::DecodeStatus::Ok);
    }
}

TEST_CASE("decode_frame_header: length encodings (§5.2)") {
    // Boundaries of each encoding decode; the same value in a longer encoding
    // is rejected.
    for (std::size_t len : {std::size_t{0}, std::size_t{125}, std::size_t{126}, std::size_t{65535},
                            std::size_t{65536}}) {
        const ws::DecodeResult r = ws::decode_frame_header(frame(0x82, len, false));
        REQUIRE(r.status == ws::DecodeStatus::Ok);
        CHECK(r.header.payload_len == len);
    }
    const Bytes non_minimal_16 = {0x82, 0x7E, 0x00, 0x7D};
    const Bytes non_minimal_64 = {0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    const Bytes non_minimal_64_small = {0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0x05};
    for (const Bytes& b : {non_minimal_16, non_minimal_64, non_minimal_64_small}) {
        const ws::DecodeResult r = ws::decode_frame_header(b);
        CHECK(r.status == ws::DecodeStatus::Error);
        CHECK(r.close_code == 1002);
        CHECK(r.reason == "non-minimal payload length");
    }
    const Bytes top_bit = {0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0};
    const ws::DecodeResult r = ws::decode_frame_header(top_bit);
    CHECK(r.status == ws::DecodeStatus::Error);
    CHECK(r.close_code == 1009);
    CHECK(r.reason == "payload length with most significant bit set");
    // The largest legal length decodes.
    const Bytes max_len = {0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    const ws::DecodeResult m = ws::decode_frame_header(max_len);
    REQUIRE(m.status == ws::DecodeStatus::Ok);
    CHECK(m.header.payload_len == 0x7FFFFFFFFFFFFFFFull);
    // RSV bits are reported, not judged.
    const ws::DecodeResult rsv = ws::decode_frame_header(Bytes{0xF3, 0x00});
    REQUIRE(rsv.status == ws::DecodeStatus::Ok);
    CHECK(rsv.header.rsv == 7);
    CHECK(rsv.header.opcode == 3);
}

TEST_CASE("FrameScanner: §5.7 examples step by step") {
    SUBCASE("unmasked Hello from a server is forwarded in one step") {
        ws::FrameScanner s(server());
        const Step st = step_whole(s, kHello);
        CHECK(st.kind == Step::Kind::Forward);
        CHECK(st.bytes == 7);
        CHECK(st.frame_start);
        CHECK(st.message_end);
        CHECK(st.header.opcode == 1);
        CHECK(s.at_frame_boundary());
        CHECK_FALSE(s.in_message());
    }
    SUBCASE("masked Hello from a client, payload arriving later") {
        ws::FrameScanner s(client());
        const Bytes head(kMaskedHello.begin(), kMaskedHello.begin() + 8);
        Step st = step_whole(s, head);
        CHECK(st.kind == Step::Kind::Forward);
        CHECK(st.bytes == 8);
        CHECK(st.frame_start);
        CHECK_FALSE(st.message_end);
        CHECK_FALSE(s.at_frame_boundary());
        CHECK(s.in_message());
        const Bytes rest(kMaskedHello.begin() + 8, kMaskedHello.end());
        st = step_whole(s, rest);
        CHECK(st.kind == Step::Kind::Forward);
        CHECK(st.bytes == 3);
        CHECK_FALSE(st.frame_start);
        CHECK(st.message_end);
        CHECK(s.at_frame_boundary());
        CHECK(step_whole(s, {}).kind == Step::Kind::NeedMore);
    }
    SUBCASE("fragmented Hel + lo with a ping in between") {
        ws::FrameScanner s(server());
        Step st = step_whole(s, kHel);
        CHECK(st.kind == Step::Kind::Forward);
        CHECK(st.bytes == 5);
        CHECK_FALSE(st.message_end);
        CHECK(s.at_frame_boundary());
        CHECK(s.in_message());
        st = step_whole(s, kPingHello);
        CHECK(st.kind == Step::Kind::ControlFrame);
        CHECK(st.bytes == 7);
        CHECK(st.header.opcode == 9);
        CHECK(s.in_message());
        st = step_whole(s, kLo);
        CHECK(st.kind == Step::Kind::Forward);
        CHECK(st.bytes == 4);
        CHECK(st.message_end);
        CHECK_FALSE(s.in_message());
    }
    SUBCASE("a control frame waits until it is whole") {
        ws::FrameScanner s(client());
        for (std::size_t n = 0; n < kMaskedPongHello.size(); ++n) {
            CAPTURE(n);
            CHECK(s.step({kMaskedPongHello.data(), n}, n).kind == Step::Kind::NeedMore);
        }
        const Step st = step_whole(s, kMaskedPongHello);
        CHECK(st.kind == Step::Kind::ControlFrame);
        CHECK(st.bytes == 11);
        CHECK(st.header.mask_key == kMask);
    }
    SUBCASE("64 KiB frame forwarded as it arrives, payload never required in front") {
        ws::FrameScanner s(server());
        const Bytes f = binary_64k();
        // 10 header bytes + 1000 payload bytes buffered; front holds only 139.
        Step st = s.step({f.data(), ws::kMaxControlFrame}, 1010);
        CHECK(st.kind == Step::Kind::Forward);
        CHECK(st.bytes == 1010);
        CHECK(st.frame_start);
        // The rest arrives at once: the scanner forwards exactly the frame.
        st = s.step({f.data() + 1010, ws::kMaxControlFrame}, 100000);
        CHECK(st.kind == Step::Kind::Forward);
        CHECK(st.bytes == 65536 - 1000);
        CHECK_FALSE(st.frame_start);
        CHECK(st.message_end);
        CHECK(s.at_frame_boundary());
    }
    SUBCASE("zero-length FIN frame ends its message at once") {
        ws::FrameScanner s(server());
        const Step st = step_whole(s, Bytes{0x82, 0x00});
        CHECK(st.kind == Step::Kind::Forward);
        CHECK(st.bytes == 2);
        CHECK(st.message_end);
    }
}

TEST_CASE("FrameScanner: transcripts of whole streams") {
    const Bytes stream = cat({kHel, kPingHello, kLo, kHello, binary_256()});
    CHECK(scan_whole(stream, server()) ==
          "frame@0 fin=0 rsv=0 op=1 masked=0 len=3 hl=2\n"
          "control@5 op=9 len=5 bytes=7\n"
          "frame@12 fin=1 rsv=0 op=0 masked=0 len=2 hl=2\n"
          "message_end@16\n"
          "frame@16 fin=1 rsv=0 op=1 masked=0 len=5 hl=2\n"
          "message_end@23\n"
          "frame@23 fin=1 rsv=0 op=2 masked=0 len=256 hl=4\n"
          "message_end@283\n"
          "consumed 283\n");
    CHECK(scan_whole(cat({kMaskedHello, kMaskedPongHello, Bytes{0x81}}), client()) ==
          "frame@0 fin=1 rsv=0 op=1 masked=1 len=5 hl=6\n"
          "message_end@11\n"
          "control@11 op=10 len=5 bytes=11\n"
          "consumed 22\n");
}

TEST_CASE("FrameScanner: every stream split at every byte boundary scans the same") {
    const std::vector<std::pair<Bytes, ws::ScannerPolicy>> streams = {
        {kHello, server()},
        {kMaskedHello, client()},
        {cat({kHel, kLo}), server()},
        {cat({kHel, kPingHello, kPingHello, kLo}), server()},
        {cat({kPingHello, kHello}), server()},
        {cat({kMaskedPongHello, kMaskedHello}), client()},
        {binary_256(), server()},
        {binary_64k(), server()},
        {cat({frame(0x01, 0, true), frame(0x89, 125, true), frame(0x00, 300, true),
              frame(0x8A, 0, true), frame(0x80, 0, true), frame(0x88, 2, true)}),
         client()},
        {cat({frame(0xC1, 10, false), frame(0x00, 10, false), frame(0x80, 10, false)}), server(0, true)},
        // Streams that end in an error after legal frames.
        {cat({kHello, kMaskedHello}), server()},
        {cat({kMaskedHello, kHello}), client()},
        {cat({kHel, kHello}), server()},
        {cat({kHello, kLo}), server()},
        {cat({kHello, Bytes{0x83, 0x00}}), server()},
        {cat({kHello, Bytes{0x09, 0x00}}), server()},
        {cat({kHello, frame(0x89, 126, false)}), server()},
        {cat({kHello, Bytes{0xC1, 0x00}}), server()},
        {cat({kHello, Bytes{0x82, 0x7E, 0x00, 0x05}}), server()},
        {cat({kHello, Bytes{0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0}}), server()},
        {cat({frame(0x02, 6, false), kPingHello, frame(0x80, 5, false)}), server(10)},
        {cat({frame(0x02, 5, false), frame(0x80, 5, false), frame(0x82, 11, false)}), server(10)},
        // Incomplete at the end: a partial header stays unconsumed.
        {cat({kHello, Bytes{0x82, 0x7E, 0x01}}), server()},
        {cat({kHello, Bytes(kPingHello.begin(), kPingHello.end() - 1)}), server()},
    };
    for (std::size_t i = 0; i < streams.size(); ++i) {
        CAPTURE(i);
        check_split_invariant(streams[i].first, streams[i].second);
    }
}

TEST_CASE("FrameScanner: rejections (§5.1, §5.2, §5.4, §5.5)") {
    struct Case {
        Bytes stream;
        ws::ScannerPolicy policy;
        std::uint16_t code;
        std::string_view reason;
    };
    const Case cases[] = {
        {kHello, client(), 1002, "unmasked client frame"},
        {kPingHello, client(), 1002, "unmasked client frame"},
        {kMaskedHello, server(), 1002, "masked server frame"},
        {kMaskedPongHello, server(), 1002, "masked server frame"},
        {Bytes{0x83, 0x00}, server(), 1002, "reserved opcode"},
        {Bytes{0x87, 0x00}, server(), 1002, "reserved opcode"},
        {Bytes{0x8B, 0x00}, server(), 1002, "reserved opcode"},
        {Bytes{0x8F, 0x00}, server(), 1002, "reserved opcode"},
        {Bytes{0x09, 0x00}, server(), 1002, "fragmented control frame"},
        {Bytes{0x08, 0x00}, server(), 1002, "fragmented control frame"},
        {frame(0x89, 126, false), server(), 1002, "control frame too long"},
        {frame(0x88, 126, true), client(), 1002, "control frame too long"},
        {Bytes{0xC1, 0x00}, server(), 1002, "reserved bits set"},
        {Bytes{0xA1, 0x00}, server(0, true), 1002, "reserved bits set"},
        {Bytes{0x91, 0x00}, server(0, true), 1002, "reserved bits set"},
        // RFC 7692 §6: RSV1 marks the first frame of a message only.
        {cat({Bytes{0x41, 0x00}, Bytes{0xC0, 0x00}}), server(0, true), 1002, "reserved bits set"},
        {Bytes{0xC9, 0x00}, server(0, true), 1002, "reserved bits set"},
        {Bytes{0x80, 0x00}, server(), 1002, "unexpected continuation frame"},
        {Bytes{0x00, 0x00}, server(), 1002, "unexpected continuation frame"},
        {cat({kHello, kLo}), server(), 1002, "unexpected continuation frame"},
        {cat({kHel, kHello}), server(), 1002, "expected continuation frame"},
        {cat({kHel, Bytes{0x02, 0x00}}), server(), 1002, "expected continuation frame"},
        {frame(0x82, 11, false), server(10), 1009, "message too big"},
        {cat({frame(0x02, 6, false), kPingHello, frame(0x80, 5, false)}), server(10), 1009, "message too big"},
        {frame(0x82, 70000, true), client(65536), 1009, "message too big"},
        {Bytes{0x82, 0x7E, 0x00, 0x7D}, server(), 1002, "non-minimal payload length"},
        {Bytes{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0}, client(), 1009,
         "payload length with most significant bit set"},
    };
    for (std::size_t i = 0; i < std::size(cases); ++i) {
        const Case& tc = cases[i];
        CAPTURE(i);
        const std::string t = scan_whole(tc.stream, tc.policy);
        const std::size_t at = t.find("error@");
        REQUIRE(at != std::string::npos);
        const std::string tail = t.substr(t.find(' ', at) + 1);
        CHECK(tail.substr(0, tail.find('\n')) == std::to_string(tc.code) + " " + std::string(tc.reason));
    }
}

TEST_CASE("FrameScanner: accepted edge cases") {
    // Exactly at the limit, over several fragments, then a fresh message.
    CHECK(scan_whole(cat({frame(0x02, 4, false), frame(0x00, 3, false), frame(0x80, 3, false),
                          frame(0x82, 10, false)}),
                     server(10))
              .find("error") == std::string::npos);
    // A message at the limit may still end with an empty fragment.
    CHECK(scan_whole(cat({frame(0x02, 10, false), frame(0x80, 0, false)}), server(10)) ==
          "frame@0 fin=0 rsv=0 op=2 masked=0 len=10 hl=2\n"
          "frame@12 fin=1 rsv=0 op=0 masked=0 len=0 hl=2\n"
          "message_end@14\n"
          "consumed 14\n");
    // permessage-deflate: RSV1 on the first frame of each message.
    CHECK(scan_whole(cat({frame(0xC1, 3, false), frame(0x41, 3, false), frame(0x80, 3, false)}),
                     server(0, true))
              .find("error") == std::string::npos);
    // Control frames of 0 and 125 bytes; a close between fragments.
    CHECK(scan_whole(cat({frame(0x01, 1, true), frame(0x89, 0, true), frame(0x8A, 125, true),
                          frame(0x88, 2, true), frame(0x80, 1, true)}),
                     client())
              .find("error") == std::string::npos);
}

TEST_CASE("FrameScanner: no bytes means no decision") {
    ws::FrameScanner s(client());
    CHECK(s.step({}, 0).kind == Step::Kind::NeedMore);
    CHECK(s.at_frame_boundary());
    CHECK_FALSE(s.in_message());
}

TEST_CASE("valid_utf8 (RFC 3629)") {
    const Bytes valid[] = {
        {},
        text("Hello, world"),
        {0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5},  // κόσμε
        {0x00},
        {0x7F},
        {0xC2, 0x80},              // U+0080
        {0xDF, 0xBF},              // U+07FF
        {0xE0, 0xA0, 0x80},        // U+0800
        {0xED, 0x9F, 0xBF},        // U+D7FF
        {0xEE, 0x80, 0x80},        // U+E000
        {0xEF, 0xBF, 0xBF},        // U+FFFF
        {0xF0, 0x90, 0x80, 0x80},  // U+10000
        {0xF4, 0x8F, 0xBF, 0xBF},  // U+10FFFF
    };
    for (const Bytes& b : valid) {
        CAPTURE(b.size());
        CHECK(ws::valid_utf8(b));
    }
    const Bytes invalid[] = {
        {0x80},                    // stray continuation
        {0xBF},
        {0xC0, 0x80},              // overlong U+0000
        {0xC1, 0xBF},              // overlong U+007F
        {0xE0, 0x80, 0x80},        // overlong
        {0xE0, 0x9F, 0xBF},        // overlong U+07FF
        {0xF0, 0x80, 0x80, 0x80},  // overlong
        {0xF0, 0x8F, 0xBF, 0xBF},  // overlong U+FFFF
        {0xED, 0xA0, 0x80},        // U+D800
        {0xED, 0xBF, 0xBF},        // U+DFFF
        {0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80},  // surrogate pair
        {0xF4, 0x90, 0x80, 0x80},  // U+110000
        {0xF5, 0x80, 0x80, 0x80},
        {0xF8, 0x88, 0x80, 0x80, 0x80},
        {0xFE},
        {0xFF},
        {0xC2},                    // truncated
        {0xE0, 0xA0},
        {0xF0, 0x90, 0x80},
        {0x41, 0xE2, 0x82},        // truncated at the end
        {0xC2, 0x41},              // bad continuation
        {0xE0, 0xA0, 0x41},
        {0xF0, 0x90, 0x80, 0x41},
        {0xE2, 0x82, 0xAC, 0x80},  // valid then stray
    };
    for (std::size_t i = 0; i < std::size(invalid); ++i) {
        CAPTURE(i);
        CHECK_FALSE(ws::valid_utf8(invalid[i]));
    }
}

TEST_CASE("valid_utf8 agrees with a decoder over every code point") {
    for (std::uint32_t cp = 0; cp <= 0x10FFFF; cp += (cp < 0x11000 ? 1 : 0x101)) {
        Bytes b;
        if (cp < 0x80) {
            b = {static_cast<std::uint8_t>(cp)};
        } else if (cp < 0x800) {
            b = {static_cast<std::uint8_t>(0xC0 | (cp >> 6)), static_cast<std::uint8_t>(0x80 | (cp & 0x3F))};
        } else if (cp < 0x10000) {
            b = {static_cast<std::uint8_t>(0xE0 | (cp >> 12)), static_cast<std::uint8_t>(0x80 | ((cp >> 6) & 0x3F)),
                 static_cast<std::uint8_t>(0x80 | (cp & 0x3F))};
        } else {
            b = {static_cast<std::uint8_t>(0xF0 | (cp >> 18)), static_cast<std::uint8_t>(0x80 | ((cp >> 12) & 0x3F)),
                 static_cast<std::uint8_t>(0x80 | ((cp >> 6) & 0x3F)), static_cast<std::uint8_t>(0x80 | (cp & 0x3F))};
        }
        const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        if (ws::valid_utf8(b) == surrogate) {
            CAPTURE(cp);
            REQUIRE(ws::valid_utf8(b) == !surrogate);
        }
    }
}

TEST_CASE("parse_close_payload (§5.5.1, §7.4)") {
    SUBCASE("empty payload: no status") {
        const ws::ClosePayload p = ws::parse_close_payload({});
        CHECK(p.ok);
        CHECK(p.code == 1005);
        CHECK(p.reason.empty());
    }
    SUBCASE("one byte is an error") {
        const ws::ClosePayload p = ws::parse_close_payload(Bytes{0x03});
        CHECK_FALSE(p.ok);
        CHECK(p.error == "close payload of 1 byte");
    }
    SUBCASE("code and reason") {
        const Bytes payload = cat({Bytes{0x03, 0xE8}, text("bye \xC3\xA9")});
        const ws::ClosePayload p = ws::parse_close_payload(payload);
        CHECK(p.ok);
        CHECK(p.code == 1000);
        CHECK(p.reason == "bye \xC3\xA9");
    }
    SUBCASE("reason must be UTF-8") {
        const ws::ClosePayload p = ws::parse_close_payload(Bytes{0x03, 0xE8, 0xC3});
        CHECK_FALSE(p.ok);
        CHECK(p.error == "close reason not UTF-8");
        CHECK_FALSE(ws::parse_close_payload(Bytes{0x03, 0xE8, 0xED, 0xA0, 0x80}).ok);
    }
    SUBCASE("every code") {
        const std::uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                       1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
        const std::uint16_t invalid[] = {0,    1,    999,  1004, 1005, 1006, 1015, 1016,
                                         1100, 2000, 2999, 5000, 5001, 0xFFFF};
        for (std::uint16_t code : valid) {
            CAPTURE(code);
            const ws::ClosePayload p = ws::parse_close_payload(
                Bytes{static_cast<std::uint8_t>(code >> 8), static_cast<std::uint8_t>(code)});
            CHECK(p.ok);
            CHECK(p.code == code);
        }
        for (std::uint16_t code : invalid) {
            CAPTURE(code);
            const ws::ClosePayload p = ws::parse_close_payload(
                Bytes{static_cast<std::uint8_t>(code >> 8), static_cast<std::uint8_t>(code), 'x'});
            CHECK_FALSE(p.ok);
            CHECK(p.error == "invalid close code");
        }
        std::size_t accepted = 0;
        for (std::uint32_t code = 0; code <= 0xFFFF; ++code) {
            const Bytes b = {static_cast<std::uint8_t>(code >> 8), static_cast<std::uint8_t>(code)};
            if (ws::parse_close_payload(b).ok) ++accepted;
        }
        CHECK(accepted == 4 + 8 + 2000);  // 1000-1003, 1007-1014, 3000-4999
    }
}

TEST_CASE("apply_mask is an involution and honours the offset") {
    Bytes data = text("Hello, masked world");
    const Bytes original = data;
    ws::apply_mask(data, kMask);
    CHECK(data != original);
    CHECK(data[0] == ('H' ^ 0x37));
    CHECK(data[5] == (',' ^ 0xfa));
    // Unmasking in two pieces, the second continuing at its offset.
    ws::apply_mask(std::span(data).first(7), kMask, 0);
    ws::apply_mask(std::span(data).subspan(7), kMask, 7);
    CHECK(data == original);
}

TEST_CASE("encode_control_frame round trips, masked and unmasked") {
    for (ws::Opcode op : {ws::Opcode::Ping, ws::Opcode::Pong, ws::Opcode::Close}) {
        for (std::size_t len : {std::size_t{0}, std::size_t{5}, std::size_t{125}}) {
            for (bool masked : {false, true}) {
                CAPTURE(len);
                CAPTURE(masked);
                Bytes payload(len);
                for (std::size_t i = 0; i < len; ++i) payload[i] = static_cast<std::uint8_t>(i * 7);
                std::array<std::uint8_t, ws::kMaxControlFrame> out{};
                const auto key = masked ? std::optional(kMask) : std::nullopt;
                const std::size_t n = ws::encode_control_frame(out.data(), op, payload, key);
                REQUIRE(n == 2 + (masked ? 4 : 0) + len);
                const ws::DecodeResult d = ws::decode_frame_header({out.data(), n});
                REQUIRE(d.status == ws::DecodeStatus::Ok);
                CHECK(d.header.fin);
                CHECK(d.header.rsv == 0);
                CHECK(d.header.opcode == static_cast<std::uint8_t>(op));
                CHECK(d.header.masked == masked);
                CHECK(d.header.payload_len == len);
                Bytes got(out.begin() + static_cast<std::ptrdiff_t>(d.header.header_len),
                          out.begin() + static_cast<std::ptrdiff_t>(n));
                if (masked) {
                    CHECK(d.header.mask_key == kMask);
                    ws::apply_mask(got, d.header.mask_key);
                }
                CHECK(got == payload);
                // The scanner of the receiving side accepts it whole.
                ws::FrameScanner s(masked ? client() : server());
                const Step st = s.step({out.data(), n}, n);
                CHECK(st.kind == Step::Kind::ControlFrame);
                CHECK(st.bytes == n);
            }
        }
    }
    SUBCASE("the §5.7 ping and masked pong are reproduced exactly") {
        std::array<std::uint8_t, ws::kMaxControlFrame> out{};
        std::size_t n = ws::encode_control_frame(out.data(), ws::Opcode::Ping, text("Hello"), std::nullopt);
        CHECK(Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n)) == kPingHello);
        n = ws::encode_control_frame(out.data(), ws::Opcode::Pong, text("Hello"), kMask);
        CHECK(Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n)) == kMaskedPongHello);
    }
    SUBCASE("refuses data opcodes and oversized payloads") {
        std::array<std::uint8_t, ws::kMaxControlFrame + 16> out{};
        CHECK(ws::encode_control_frame(out.data(), ws::Opcode::Text, text("x"), std::nullopt) == 0);
        CHECK(ws::encode_control_frame(out.data(), ws::Opcode::Ping, Bytes(126, 'x'), std::nullopt) == 0);
        CHECK(out[0] == 0);
    }
}

TEST_CASE("encode_close_frame round trips and truncates at a UTF-8 boundary") {
    struct Case {
        std::uint16_t code;
        std::string reason;
        std::string expected_reason;
    };
    const std::string ascii_123(123, 'a');
    const std::string ascii_122(122, 'a');
    const Case cases[] = {
        {1000, "", ""},
        {1001, "shutting down", "shutting down"},
        {1014, "bad gateway \xE2\x82\xAC", "bad gateway \xE2\x82\xAC"},
        {1009, ascii_123, ascii_123},
        {1009, ascii_123 + "b", ascii_123},
        {1009, ascii_122 + "\xC3\xA9", ascii_122},                 // é would end at byte 124
        {1009, std::string(121, 'a') + "\xE2\x82\xAC", std::string(121, 'a')},  // € would end at 124
        {1009, std::string(120, 'a') + "\xE2\x82\xAC", std::string(120, 'a') + "\xE2\x82\xAC"},
        {1009, std::string(119, 'a') + "\xF0\x9F\x98\x80" + "z", std::string(119, 'a') + "\xF0\x9F\x98\x80"},
        {1009, std::string(120, 'a') + "\xF0\x9F\x98\x80", std::string(120, 'a')},
        {1009, std::string(300, 'a'), ascii_123},
    };
    for (const Case& tc : cases) {
        for (bool masked : {false, true}) {
            CAPTURE(tc.reason.size());
            CAPTURE(masked);
            std::array<std::uint8_t, ws::kMaxControlFrame> out{};
            const auto key = masked ? std::optional(kMask) : std::nullopt;
            const std::size_t n = ws::encode_close_frame(out.data(), tc.code, tc.reason, key);
            REQUIRE(n <= ws::kMaxControlFrame);
            const ws::DecodeResult d = ws::decode_frame_header({out.data(), n});
            REQUIRE(d.status == ws::DecodeStatus::Ok);
            CHECK(d.header.fin);
            CHECK(d.header.opcode == 0x8);
            CHECK(d.header.masked == masked);
            CHECK(d.header.payload_len <= 125);
            REQUIRE(d.header.header_len + d.header.payload_len == n);
            Bytes payload(out.begin() + static_cast<std::ptrdiff_t>(d.header.header_len),
                          out.begin() + static_cast<std::ptrdiff_t>(n));
            if (masked) ws::apply_mask(payload, d.header.mask_key);
            const ws::ClosePayload p = ws::parse_close_payload(payload);
            REQUIRE(p.ok);
            CHECK(p.code == tc.code);
            CHECK(p.reason == tc.expected_reason);
        }
    }
}
