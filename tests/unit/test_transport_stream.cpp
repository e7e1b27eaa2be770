// The HTTP/2 stream transport (runtime/transport_stream.cpp) on a real event
// loop: the transport holds one end of a bufferevent pair, the test plays
// runtime/h2_connection.cpp at the other.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "runtime/transport_stream.h"
#include "transport_support.h"

namespace {

using runtime::Side;
using runtime::Transport;
using runtime::TransportRead;

using transport_test::RecordingUser;

struct Fixture {
    static constexpr std::size_t kHigh = 4096;
    event_base* base = event_base_new();
    RecordingUser user;
    std::unique_ptr<Transport> transport;
    bufferevent* connection_end = nullptr;  // the H2Connection's end

    Fixture() {
        bufferevent* pair[2] = {nullptr, nullptr};
        REQUIRE(bufferevent_pair_new(base, 0, pair) == 0);
        connection_end = pair[0];
        // As H2Connection::dispatch: the stream's end reads up to limits.buffer_bytes.
        bufferevent_setwatermark(connection_end, EV_READ, 0, kHigh);
        bufferevent_enable(connection_end, EV_READ | EV_WRITE);
        transport = runtime::make_stream_transport(pair[1], user, Side::Client, kHigh / 2);
        REQUIRE(transport);
    }
    ~Fixture() {
        transport.reset();
        bufferevent_free(connection_end);
        // A pair end is freed by a deferred callback: the loop runs it.
        event_base_loop(base, EVLOOP_NONBLOCK);
        event_base_free(base);
    }
    void turn() {
        for (int i = 0; i < 4; ++i) event_base_loop(base, EVLOOP_NONBLOCK);
    }
    void from_stream(const std::string& bytes) { bufferevent_write(connection_end, bytes.data(), bytes.size()); }
    std::string to_stream() {
        evbuffer* input = bufferevent_get_input(connection_end);
        std::string out(evbuffer_get_length(input), '\0');
        evbuffer_remove(input, out.data(), out.size());
        return out;
    }
};

}  // namespace

TEST_CASE("stream transport: DATA reaches the tunnel only while it reads") {
    Fixture f;
    f.from_stream("frame bytes");
    f.turn();
    CHECK(f.user.readable == 0);
    // Not read: the bytes stay at the connection's end (no window given back).
    CHECK(evbuffer_get_length(bufferevent_get_output(f.connection_end)) == 11);
    f.transport->set_reading(true);
    f.turn();
    CHECK(f.user.readable >= 1);
    CHECK(f.user.last_side == Side::Client);
    std::vector<std::uint8_t> buffer(64);
    TransportRead got = f.transport->read(buffer);
    CHECK(std::string(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(got.got)) == "frame bytes");
    CHECK(got.closed == 0);
}

TEST_CASE("stream transport: a read larger than the buffer wakes the reader again") {
    Fixture f;
    f.transport->set_reading(true);
    f.from_stream(std::string(100, 'a'));
    f.turn();
    std::vector<std::uint8_t> buffer(60);
    CHECK(f.transport->read(buffer).got == 60);
    const int before = f.user.readable;
    f.turn();
    CHECK(f.user.readable == before + 1);
    CHECK(f.transport->read(buffer).got == 40);
}

TEST_CASE("stream transport: END_STREAM is reported after the bytes before it, also when paused") {
    Fixture f;
    f.from_stream("tail");
    bufferevent_flush(f.connection_end, EV_WRITE, BEV_FINISHED);
    f.turn();
    f.transport->set_reading(true);
    f.turn();
    std::vector<std::uint8_t> buffer(64);
    TransportRead got = f.transport->read(buffer);
    CHECK(got.got == 4);
    if (got.closed == 0) {
        f.turn();
        got = f.transport->read(buffer);
    }
    CHECK(got.closed == TransportRead::kEof);
}

TEST_CASE("stream transport: bytes towards the stream queue past the connection's watermark and drain") {
    Fixture f;
    const std::string sent(3 * Fixture::kHigh, 'z');
    f.transport->send(reinterpret_cast<const std::uint8_t*>(sent.data()), sent.size());
    f.turn();
    CHECK(f.transport->queued() > 0);
    std::string received;
    for (int turns = 0; turns < 100 && received.size() < sent.size(); ++turns) {
        received += f.to_stream();
        f.turn();
    }
    CHECK(received == sent);
    CHECK(f.transport->queued() == 0);
    CHECK(f.user.drained > 0);
}

TEST_CASE("stream transport: releasing it ends the stream towards the connection") {
    Fixture f;
    f.transport->send(reinterpret_cast<const std::uint8_t*>("bye"), 3);
    f.transport.reset();
    f.turn();
    CHECK(f.to_stream() == "bye");
}
