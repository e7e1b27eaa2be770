// The io_uring transport (runtime/transport_uring.cpp) over real TCP
// loopback pairs and a real libevent loop: bytes both ways, backpressure
// that leaves bytes in the kernel, the end of a stream, failures, and
// destruction while the kernel still works on the socket.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/transport_uring.h"
#include "runtime/uring.h"
#include "uring_support.h"

namespace {

using runtime::Side;
using runtime::Transport;
using runtime::TransportRead;
using runtime::uring::Ring;
using uring_test::Loop;
using uring_test::pattern;
using uring_test::Peer;
using uring_test::make_ring;
using uring_test::tcp_pair;

// What the tunnel passes with limits.buffer_bytes at its default and over:
// min(buffer_bytes, 128 KiB).
constexpr std::size_t kMaxIo = 128 * 1024;

// A tunnel's stand-in: reads what is reported (or not), optionally echoes it.
struct Endpoint final : runtime::TransportUser {
    std::unique_ptr<Transport> transport;
    std::string received;
    short closed = 0;
    int readable = 0;
    int drained = 0;
    int failed = 0;
    std::size_t read_size = 65536;
    bool consume = true;
    bool echo = false;
    std::function<void(Endpoint&)> after_read;  // may destroy the transport

    Endpoint(Ring& ring, int fd) : transport(runtime::make_uring_transport(ring, fd, *this, Side::Backend, kMaxIo)) {
        REQUIRE(transport);
    }

    void transport_readable(Side side) override {
        CHECK(side == Side::Backend);
        ++readable;
        if (!consume) return;
        std::vector<std::uint8_t> buffer(read_size);
        const TransportRead r = transport->read(buffer);
        received.append(reinterpret_cast<const char*>(buffer.data()), r.got);
        if (r.closed) closed = r.closed;
        if (echo && r.got > 0) transport->send(buffer.data(), r.got);
        if (after_read) after_read(*this);
    }
    void transport_drained(Side) override { ++drained; }
    void transport_failed(Side) override { ++failed; }

    void send(const std::string& bytes) {
        transport->send(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
};

// Small kernel buffers on both ends (no autotuning), so that a peer's
// writes block after a few hundred KiB instead of tens of MiB.
void shrink_buffers(const uring_test::TcpPair& pair) {
    const int size = 65536;
    setsockopt(pair.near, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(pair.near, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt(pair.far, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(pair.far, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

void reset(int fd) {
    const linger abort{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
}

enum class Buffers { Kernel, Small };

// One transport on a loopback pair, its peer driven by the same loop.
struct Single {
    Loop loop;
    std::unique_ptr<Ring> ring;
    std::unique_ptr<Peer> peer;
    std::unique_ptr<Endpoint> endpoint;

    explicit Single(Buffers buffers = Buffers::Kernel) : ring(make_ring(loop)) {
        const auto pair = tcp_pair();
        if (buffers == Buffers::Small) shrink_buffers(pair);
        peer = std::make_unique<Peer>(loop, pair.far);
        endpoint = std::make_unique<Endpoint>(*ring, pair.near);
    }
    bool run_until(const std::function<bool()>& done) { return loop.run_until(done); }
    bool peer_ended() const { return peer->eof || peer->error != 0; }
};

// <count> transports on loopback pairs, each with its peer.
struct Fleet {
    Loop loop;
    std::unique_ptr<Ring> ring;
    std::vector<std::unique_ptr<Peer>> peers;
    std::vector<std::unique_ptr<Endpoint>> endpoints;

    explicit Fleet(int count, const runtime::uring::Options& options = {}) : ring(make_ring(loop, options)) {
        for (int i = 0; i < count; ++i) {
            const auto pair = tcp_pair();
            peers.push_back(std::make_unique<Peer>(loop, pair.far));
            endpoints.push_back(std::make_unique<Endpoint>(*ring, pair.near));
        }
    }
    // Turns until endpoint (or peer) i has received expected[i] for every i; false after 5 s.
    bool endpoints_receive(const std::vector<std::string>& expected) {
        return loop.run_until([&] { return all_have(expected, [&](std::size_t i) { return endpoints[i]->received; }); });
    }
    bool peers_receive(const std::vector<std::string>& expected) {
        return loop.run_until([&] { return all_have(expected, [&](std::size_t i) { return peers[i]->received; }); });
    }

private:
    static bool all_have(const std::vector<std::string>& expected, const std::function<std::string(std::size_t)>& got) {
        for (std::size_t i = 0; i < expected.size(); ++i) {
            if (got(i).size() < expected[i].size()) return false;
        }
        return true;
    }
};

std::vector<std::string> numbered(const std::string& prefix, int count) {
    std::vector<std::string> out;
    for (int i = 0; i < count; ++i) out.push_back(prefix + std::to_string(i));
    return out;
}

}  // namespace

TEST_CASE("transport_uring: an echo of 1 MiB comes back byte-exact") {
    Single t;
    t.endpoint->echo = true;
    const std::string data = pattern(1 << 20, 1);
    t.peer->write(data);
    REQUIRE(t.run_until([&] { return t.peer->received.size() >= data.size(); }));
    CHECK(t.peer->received == data);
    CHECK(t.endpoint->received == data);
    CHECK(t.run_until([&] { return t.endpoint->transport->queued() == 0; }));
    CHECK(t.endpoint->drained > 0);
    CHECK(t.endpoint->failed == 0);
    CHECK(t.endpoint->closed == 0);
}

TEST_CASE("transport_uring: 1 MiB each way at once") {
    Single t;
    const std::string up = pattern(1 << 20, 2);
    const std::string down = pattern(1 << 20, 3);
    t.peer->write(up);
    // In pieces of every size, so that blocks are filled, split and chained.
    for (std::size_t at = 0, piece = 1; at < down.size(); at += piece, piece = piece * 3 % 70001 + 1) {
        t.endpoint->send(down.substr(at, piece));
    }
    CHECK(t.endpoint->transport->queued() == down.size());  // nothing is written from inside send()
    REQUIRE(t.run_until([&] { return t.endpoint->received.size() >= up.size() && t.peer->received.size() >= down.size(); }));
    CHECK(t.endpoint->received == up);
    CHECK(t.peer->received == down);
    // The peer may read the last bytes before their send's completion is reaped.
    CHECK(t.run_until([&] { return t.endpoint->transport->queued() == 0; }));
    CHECK(t.ring->buffers_in_kernel() == t.ring->options().buffers);  // every receive buffer recycled
}

TEST_CASE("transport_uring: reading off leaves the bytes in the kernel, and on takes them in order") {
    Single t(Buffers::Small);
    t.endpoint->transport->set_reading(false);
    const std::string data = pattern(4 << 20, 4);
    t.peer->write(data);
    t.loop.run_for(300);
    const std::size_t unsent = t.peer->unsent();
    CHECK(unsent > 0);  // the peer's writes block: the TCP window closed
    CHECK(t.endpoint->readable == 0);
    CHECK(t.ring->buffers_in_kernel() == t.ring->options().buffers);  // nothing was received
    t.loop.run_for(200);
    CHECK(t.peer->unsent() == unsent);  // and nothing is received later either

    t.endpoint->transport->set_reading(true);
    REQUIRE(t.run_until([&] { return t.endpoint->received.size() >= data.size(); }));
    CHECK(t.endpoint->received == data);
}

TEST_CASE("transport_uring: reading off mid-stream frees the pool, then resumes in order") {
    Single t(Buffers::Small);
    t.endpoint->read_size = 1000;
    t.endpoint->after_read = [](Endpoint& e) {
        if (e.received.size() > 100000) e.transport->set_reading(false);
    };
    const std::string data = pattern(4 << 20, 5);
    t.peer->write(data);
    REQUIRE(t.run_until([&] { return t.endpoint->received.size() > 100000; }));
    t.loop.run_for(300);
    const std::size_t unsent = t.peer->unsent();
    CHECK(unsent > 0);
    // What arrived before the cancel took effect left the pool.
    CHECK(t.ring->buffers_in_kernel() == t.ring->options().buffers);
    t.loop.run_for(200);
    CHECK(t.peer->unsent() == unsent);

    t.endpoint->after_read = nullptr;
    t.endpoint->read_size = 65536;
    t.endpoint->transport->set_reading(true);
    REQUIRE(t.run_until([&] { return t.endpoint->received.size() >= data.size(); }));
    CHECK(t.endpoint->received == data);
}

TEST_CASE("transport_uring: a small reader gets the rest on the next turns") {
    Single t;
    t.endpoint->read_size = 100;
    const std::string data = pattern(10000, 6);
    t.peer->write(data);
    REQUIRE(t.run_until([&] { return t.endpoint->received.size() >= data.size(); }));
    CHECK(t.endpoint->received == data);
    CHECK(t.endpoint->readable >= 100);
}

TEST_CASE("transport_uring: the end of the stream comes after the bytes before it") {
    Single t;
    t.peer->write("last words");
    shutdown(t.peer->fd(), SHUT_WR);
    REQUIRE(t.run_until([&] { return t.endpoint->closed != 0; }));
    CHECK(t.endpoint->closed == TransportRead::kEof);
    CHECK(t.endpoint->received == "last words");
    // Reported once: no more readable calls once the end was read.
    const int readable = t.endpoint->readable;
    t.loop.run_for(50);
    CHECK(t.endpoint->readable == readable);
    // The other direction still works (half-close).
    t.endpoint->send("reply");
    CHECK(t.run_until([&] { return t.peer->received == "reply"; }));
}

TEST_CASE("transport_uring: a reset is an error, and a send to it fails from the loop") {
    Single t;
    reset(t.peer->fd());
    t.peer.reset();  // closes with RST
    REQUIRE(t.run_until([&] { return t.endpoint->closed != 0; }));
    CHECK(t.endpoint->closed == TransportRead::kError);
    t.endpoint->send("into the void");
    CHECK(t.endpoint->failed == 0);  // never from inside send()
    REQUIRE(t.run_until([&] { return t.endpoint->failed > 0; }));
    CHECK(t.endpoint->failed == 1);
    CHECK(t.endpoint->transport->queued() == 0);
}

TEST_CASE("transport_uring: wake_reader makes one transport_readable without new bytes") {
    Single t;
    t.loop.run_for(20);
    CHECK(t.endpoint->readable == 0);
    t.endpoint->transport->wake_reader();
    CHECK(t.endpoint->readable == 0);
    REQUIRE(t.run_until([&] { return t.endpoint->readable == 1; }));
    t.loop.run_for(30);
    CHECK(t.endpoint->readable == 1);
    CHECK(t.endpoint->received.empty());
}

TEST_CASE("transport_uring: destroyed while receiving, the socket closes once the receive is cancelled") {
    Single t;
    t.loop.run_for(20);  // the receive is armed
    t.endpoint.reset();
    CHECK(t.ring->orphans() == 1);
    REQUIRE(t.run_until([&] { return t.peer->eof; }));
    CHECK(t.ring->orphans() == 0);
}

TEST_CASE("transport_uring: destroyed with a send in flight, the peer gets a prefix and the end") {
    Single t(Buffers::Small);
    t.peer->set_reading(false);
    const std::string data = pattern(8 << 20, 7);
    t.endpoint->send(data);
    t.loop.run_for(100);
    CHECK(t.endpoint->transport->queued() > 0);  // the send waits for room
    t.endpoint.reset();
    t.peer->set_reading(true);
    REQUIRE(t.run_until([&] { return t.peer_ended(); }));
    CHECK(t.peer->received.size() < data.size());
    CHECK(t.peer->received == data.substr(0, t.peer->received.size()));
    CHECK(t.run_until([&] { return t.ring->orphans() == 0; }));
}

TEST_CASE("transport_uring: a tunnel may destroy the transport from inside transport_readable") {
    Single t;
    t.endpoint->read_size = 10;  // bytes are left over: another readable was scheduled
    t.endpoint->after_read = [](Endpoint& e) { e.transport.reset(); };
    t.peer->write(pattern(100000, 8));
    REQUIRE(t.run_until([&] { return t.peer_ended(); }));
    CHECK(t.endpoint->readable == 1);
    CHECK(t.run_until([&] { return t.ring->orphans() == 0; }));
}

TEST_CASE("transport_uring: a tunnel may destroy the transport from inside transport_drained") {
    Loop loop;
    auto ring = make_ring(loop);
    const auto pair = tcp_pair();
    Peer peer(loop, pair.far);
    struct Dropper final : runtime::TransportUser {
        std::unique_ptr<Transport> transport;
        void transport_readable(Side) override {}
        void transport_drained(Side) override { transport.reset(); }
        void transport_failed(Side) override {}
    } dropper;
    dropper.transport = runtime::make_uring_transport(*ring, pair.near, dropper, Side::Client, kMaxIo);
    const std::string data = pattern(300000, 9);
    dropper.transport->send(reinterpret_cast<const std::uint8_t*>(data.data()), data.size());
    REQUIRE(loop.run_until([&] { return !dropper.transport; }));
    REQUIRE(loop.run_until([&] { return peer.eof || peer.error != 0; }));
    CHECK(peer.received == data.substr(0, peer.received.size()));
    CHECK(loop.run_until([&] { return ring->orphans() == 0; }));
}

TEST_CASE("transport_uring: a Ring destroyed before its orphans' completions closes their sockets") {
    Single t;
    t.peer->set_reading(false);
    t.endpoint->send(pattern(4 << 20, 10));
    t.loop.run_for(50);
    t.endpoint.reset();
    CHECK(t.ring->orphans() == 1);
    t.ring.reset();  // no loop turn in between: cancelled and closed by the destructor
    t.peer->set_reading(true);
    CHECK(t.run_until([&] { return t.peer_ended(); }));
}

TEST_CASE("transport_uring: 100 sockets' sends in one loop turn take one io_uring_enter") {
    Fleet f(100);
    f.loop.run_for(20);  // every receive armed and submitted
    const std::uint64_t before = f.ring->submits();
    const std::vector<std::string> pings = numbered("ping ", 100);
    for (int i = 0; i < 100; ++i) f.endpoints[i]->send(pings[i]);
    CHECK(f.ring->submits() == before);  // queued, not submitted
    f.loop.turn();
    CHECK(f.ring->submits() == before + 1);
    REQUIRE(f.peers_receive(pings));
    for (int i = 0; i < 100; ++i) CHECK(f.peers[i]->received == pings[i]);
    // Receiving costs no submit at all: each multishot receive stays armed.
    const std::uint64_t after_sends = f.ring->submits();
    const std::vector<std::string> pongs = numbered("pong ", 100);
    for (int i = 0; i < 100; ++i) f.peers[i]->write(pongs[i]);
    REQUIRE(f.endpoints_receive(pongs));
    for (int i = 0; i < 100; ++i) CHECK(f.endpoints[i]->received == pongs[i]);
    CHECK(f.ring->submits() == after_sends);
}

TEST_CASE("transport_uring: completions beyond the completion queue are not lost") {
    runtime::uring::Options options;
    options.entries = 4;  // a completion queue of 16
    Fleet f(64, options);
    f.loop.run_for(20);
    std::vector<std::string> expected(64);
    for (int round = 0; round < 5; ++round) {
        for (int i = 0; i < 64; ++i) {
            const std::string message = pattern(100, static_cast<unsigned>(round * 64 + i));
            expected[i] += message;
            f.peers[i]->write(message);
        }
    }
    REQUIRE(f.endpoints_receive(expected));
    for (int i = 0; i < 64; ++i) CHECK(f.endpoints[i]->received == expected[i]);
    CHECK(f.ring->overflows() > 0);  // the test did overflow the queue
}

TEST_CASE("transport_uring: receives starved by an empty buffer pool resume when it refills") {
    runtime::uring::Options options;
    options.buffers = 4;
    options.buffer_bytes = 4096;
    Fleet f(8, options);
    std::vector<std::string> data;
    for (int i = 0; i < 8; ++i) {
        f.endpoints[i]->consume = false;
        data.push_back(pattern(20000, 100 + i));
        f.peers[i]->write(data.back());
    }
    f.loop.run_for(100);
    CHECK(f.ring->buffers_in_kernel() == 0);  // the pool ran dry
    for (auto& endpoint : f.endpoints) {
        endpoint->consume = true;
        endpoint->transport->wake_reader();
    }
    REQUIRE(f.endpoints_receive(data));
    for (int i = 0; i < 8; ++i) CHECK(f.endpoints[i]->received == data[i]);
    CHECK(f.ring->buffers_in_kernel() == options.buffers);
}

TEST_CASE("transport_uring: a paused socket pins no pool buffer: the others keep receiving") {
    runtime::uring::Options options;
    options.buffers = 4;
    options.buffer_bytes = 4096;
    Fleet f(2, options);
    Endpoint& paused = *f.endpoints[0];
    paused.consume = false;  // a tunnel whose other side is full: reads nothing, then pauses
    const std::string held = pattern(12000, 200);
    f.peers[0]->write(held);
    REQUIRE(f.loop.run_until([&] { return f.ring->buffers_in_kernel() < options.buffers; }));
    f.loop.run_for(20);
    paused.transport->set_reading(false);
    CHECK(f.ring->buffers_in_kernel() == options.buffers);
    const std::string flow = pattern(200000, 201);
    f.peers[1]->write(flow);
    REQUIRE(f.loop.run_until([&] { return f.endpoints[1]->received.size() >= flow.size(); }));
    CHECK(f.endpoints[1]->received == flow);
    // The paused socket's bytes come first once it reads again, in order.
    paused.consume = true;
    paused.transport->set_reading(true);
    REQUIRE(f.loop.run_until([&] { return paused.received.size() >= held.size(); }));
    CHECK(paused.received == held);
}
