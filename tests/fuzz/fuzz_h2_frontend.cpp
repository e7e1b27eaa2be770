// libFuzzer target for the HTTP/2 front end's glue (runtime/h2_connection.cpp
// and the Sessions it creates per stream): a real Worker event loop, a
// Session accepted on one end of a socket pair on an http2 = true plain
// listener, and the input written to the other end after the client preface.
// nghttp2 parses; the glue, the header translation, the bufferevent pairs and
// the per-stream Sessions (whose back end refuses the connection, so every
// request ends in a 502 or a refusal relayed through the stream) must not
// crash, leak or hang. The loop runs a bounded number of turns per input;
// what a timer still holds finishes in a later input's turns.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <variant>

#include <event2/event.h>

#include "config/config.h"
#include "observability/error_log.h"
#include "observability/log_sink.h"
#include "runtime/generation.h"
#include "runtime/session.h"
#include "runtime/worker.h"

namespace {

constexpr char kConfig[] = R"([[listener]]
listen = "127.0.0.1:1"
http2 = true
[timeouts]
handshake = "1s"
connect = "1s"
[[pool]]
name = "main"
[[pool.backend]]
address = "127.0.0.1:1"
)";

struct Fixture {
    obs::LogSink sink{"", -1};
    obs::ErrorLog log{sink, obs::Level::Error};
    runtime::Shared shared;
    std::unique_ptr<runtime::Worker> worker;
    Fixture() {
        auto loaded = config::load_string(kConfig, "fuzz.toml");
        auto config = std::get<std::shared_ptr<const config::Config>>(loaded);
        shared.error_log = &log;
        shared.generation = std::make_shared<runtime::Generation>(config, 1, nullptr);
        worker = std::make_unique<runtime::Worker>(shared, 0);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static Fixture fixture;
    runtime::Worker& worker = *fixture.worker;
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0) return 0;
    static constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    std::string input(kPreface, sizeof kPreface - 1);
    input.append(reinterpret_cast<const char*>(data), size);
    // Written in one go (a socket pair takes far more than the fuzzer's
    // inputs), then the client half-closes: every path ends.
    (void)!write(fds[1], input.data(), input.size());
    shutdown(fds[1], SHUT_WR);

    sockaddr_storage address{};
    auto* in = reinterpret_cast<sockaddr_in*>(&address);
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
    in->sin_addr.s_addr = htonl(0x7f000001);
    const auto generation = fixture.shared.generation;
    auto* session = new runtime::Session(worker, generation);
    session->start(fds[0], reinterpret_cast<const sockaddr*>(&address), sizeof(sockaddr_in),
                   generation->config().listeners[0]);
    // Bounded: a few hundred loop turns drain whatever the input started.
    char sink[65536];
    for (int turn = 0; turn < 400; ++turn) {
        event_base_loop(worker.base(), EVLOOP_NONBLOCK);
        while (read(fds[1], sink, sizeof sink) > 0) {
        }
    }
    close(fds[1]);
    return 0;
}
