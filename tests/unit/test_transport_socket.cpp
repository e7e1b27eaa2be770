// The socket transport (runtime/transport_socket.cpp) on a real event loop
// over a Unix socket pair: what the tunnel policy relies on from a plain
// socket (the TLS path's functions are in test_transport_tls.cpp).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include <event2/event.h>

#include "runtime/transport_socket.h"
#include "transport_support.h"

namespace {

using runtime::Side;
using runtime::Transport;
using runtime::TransportRead;

using transport_test::RecordingUser;

struct Fixture {
    event_base* base = event_base_new();
    RecordingUser user;
    std::unique_ptr<Transport> transport;
    int peer = -1;  // the other end of the pair, driven by the test

    Fixture() {
        int fds[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
        peer = fds[1];
        transport = runtime::make_socket_transport(base, fds[0], nullptr, user, Side::Backend, 64 * 1024);
        REQUIRE(transport);
    }
    ~Fixture() {
        transport.reset();
        if (peer >= 0) close(peer);
        event_base_free(base);
    }
    void turn() { event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK); }
    std::string read_all() {
        std::string out;
        char chunk[65536];
        for (ssize_t n; (n = recv(peer, chunk, sizeof chunk, 0)) > 0;) out.append(chunk, static_cast<std::size_t>(n));
        return out;
    }
    std::string take(std::size_t room = 65536) {
        std::vector<std::uint8_t> buffer(room);
        TransportRead got = transport->read(buffer);
        CHECK(got.closed == 0);
        return std::string(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(got.got));
    }
};

}  // namespace

TEST_CASE("socket transport: readable only while reading is wanted") {
    Fixture f;
    REQUIRE(send(f.peer, "hello", 5, 0) == 5);
    f.turn();
    CHECK(f.user.readable == 0);
    f.transport->set_reading(true);
    f.turn();
    CHECK(f.user.readable == 1);
    CHECK(f.take() == "hello");
    f.transport->set_reading(false);
    REQUIRE(send(f.peer, "more", 4, 0) == 4);
    f.turn();
    CHECK(f.user.readable == 1);
    f.transport->set_reading(true);
    f.turn();
    CHECK(f.user.readable == 2);
    CHECK(f.take() == "more");
}

TEST_CASE("socket transport: wake_reader reports readable with nothing new") {
    Fixture f;
    f.transport->wake_reader();
    f.turn();
    CHECK(f.user.readable == 1);
    // Once: a second turn without data reports nothing.
    f.turn();
    CHECK(f.user.readable == 1);
}

TEST_CASE("socket transport: queues what the socket refuses and reports the drain, byte-exact") {
    Fixture f;
    std::string sent;
    for (int i = 0; sent.size() < (1u << 20); ++i) sent += "message " + std::to_string(i) + ";";
    f.transport->send(reinterpret_cast<const std::uint8_t*>(sent.data()), sent.size());
    CHECK(f.transport->queued() > 0);
    CHECK(f.transport->queued() < sent.size());
    std::string received;
    for (int turns = 0; turns < 10000 && received.size() < sent.size(); ++turns) {
        received += f.read_all();
        f.turn();
    }
    received += f.read_all();
    CHECK(received == sent);
    CHECK(f.transport->queued() == 0);
    CHECK(f.user.drained > 0);
    CHECK(f.user.failed == 0);
}

TEST_CASE("socket transport: end of stream and bytes before it") {
    Fixture f;
    f.transport->set_reading(true);
    REQUIRE(send(f.peer, "last", 4, 0) == 4);
    shutdown(f.peer, SHUT_WR);
    f.turn();
    CHECK(f.user.readable >= 1);
    std::vector<std::uint8_t> buffer(64);
    TransportRead got = f.transport->read(buffer);
    CHECK(got.got == 4);
    if (got.closed == 0) got = f.transport->read(buffer);
    CHECK(got.closed == TransportRead::kEof);
}

TEST_CASE("socket transport: a failed write is reported on the next turn, not inside send") {
    Fixture f;
    close(f.peer);
    f.peer = -1;
    const std::uint8_t byte = 'x';
    f.transport->send(&byte, 1);
    CHECK(f.user.failed == 0);
    f.turn();
    CHECK(f.user.failed == 1);
}

TEST_CASE("socket transport: the user may destroy the transport from a callback") {
    Fixture f;
    f.user.on_readable = [&] { f.transport.reset(); };
    f.transport->set_reading(true);
    REQUIRE(send(f.peer, "x", 1, 0) == 1);
    f.turn();
    CHECK(f.user.readable == 1);
    CHECK(!f.transport);
    // The socket was closed with it: the peer sees the end (a reset, as
    // the byte it sent was never read).
    char c;
    const ssize_t n = recv(f.peer, &c, 1, 0);
    CHECK((n == 0 || (n < 0 && errno == ECONNRESET)));
}

TEST_CASE("socket transport: drained then destroyed in the same event leaves reading alone") {
    Fixture f;
    std::string big(512 * 1024, 'b');
    f.transport->send(reinterpret_cast<const std::uint8_t*>(big.data()), big.size());
    REQUIRE(f.transport->queued() > 0);
    f.transport->set_reading(true);
    f.user.on_drained = [&] { f.transport.reset(); };
    REQUIRE(send(f.peer, "y", 1, 0) == 1);
    for (int turns = 0; turns < 1000 && f.transport; ++turns) {
        f.read_all();
        f.turn();
    }
    CHECK(!f.transport);
    CHECK(f.user.drained == 1);
}

TEST_CASE("socket transport: reports name the side it was made for") {
    Fixture f;
    f.transport->wake_reader();
    f.turn();
    CHECK(f.user.last_side == Side::Backend);
}
