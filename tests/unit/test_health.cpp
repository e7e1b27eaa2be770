#include <doctest/doctest.h>

#include <string>

#include "protocol/websocket.h"
#include "runtime/health.h"

using runtime::judge_http_probe;
using runtime::judge_websocket_probe;
using runtime::ProbeVerdict;

namespace {

constexpr std::string_view kKey = "dGhlIHNhbXBsZSBub25jZQ==";

std::string upgrade_answer() {
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Accept: " +
           ws::compute_accept(kKey) + "\r\n\r\n";
}

std::string frame(ws::Opcode opcode, std::string_view payload) {
    std::uint8_t out[ws::kMaxControlFrame];
    std::size_t n = ws::encode_control_frame(
        out, opcode, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()),
        std::nullopt);
    return std::string(reinterpret_cast<const char*>(out), n);
}

}  // namespace

TEST_CASE("http probe: 2xx and 3xx are healthy, others and garbage are not, partial heads wait") {
    CHECK(judge_http_probe("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == ProbeVerdict::Healthy);
    CHECK(judge_http_probe("HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n") == ProbeVerdict::Healthy);
    CHECK(judge_http_probe("HTTP/1.1 503 Service Unavailable\r\n\r\n") == ProbeVerdict::Unhealthy);
    CHECK(judge_http_probe("HTTP/1.1 404 Not Found\r\n\r\n") == ProbeVerdict::Unhealthy);
    CHECK(judge_http_probe("SSH-2.0-OpenSSH\r\n\r\n") == ProbeVerdict::Unhealthy);
    std::string full = "HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n";
    for (std::size_t cut = 0; cut < full.size(); ++cut) {
        CAPTURE(cut);
        CHECK(judge_http_probe(full.substr(0, cut)) == ProbeVerdict::NeedMore);
    }
    CHECK(judge_http_probe(full) == ProbeVerdict::Healthy);
}

TEST_CASE("websocket probe: a valid 101 then a pong is healthy") {
    std::string answer = upgrade_answer() + frame(ws::Opcode::Pong, "");
    CHECK(judge_websocket_probe(answer, kKey) == ProbeVerdict::Healthy);
    // Every prefix waits for more, at every byte boundary.
    for (std::size_t cut = 0; cut < answer.size(); ++cut) {
        CAPTURE(cut);
        CHECK(judge_websocket_probe(answer.substr(0, cut), kKey) == ProbeVerdict::NeedMore);
    }
    // A greeting before the pong is skipped.
    CHECK(judge_websocket_probe(upgrade_answer() + frame(ws::Opcode::Text, "hello") + frame(ws::Opcode::Pong, "p"), kKey) ==
          ProbeVerdict::Healthy);
}

TEST_CASE("websocket probe: refusals, wrong accept keys, closes and masked frames are unhealthy") {
    CHECK(judge_websocket_probe("HTTP/1.1 403 Forbidden\r\n\r\n", kKey) == ProbeVerdict::Unhealthy);
    std::string wrong = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
    CHECK(judge_websocket_probe(wrong + frame(ws::Opcode::Pong, ""), kKey) == ProbeVerdict::Unhealthy);
    CHECK(judge_websocket_probe(upgrade_answer() + frame(ws::Opcode::Close, "\x03\xe8"), kKey) == ProbeVerdict::Unhealthy);
    std::uint8_t masked[ws::kMaxControlFrame];
    std::size_t n = ws::encode_control_frame(masked, ws::Opcode::Pong, {}, std::array<std::uint8_t, 4>{1, 2, 3, 4});
    CHECK(judge_websocket_probe(upgrade_answer() + std::string(reinterpret_cast<char*>(masked), n), kKey) ==
          ProbeVerdict::Unhealthy);
}
