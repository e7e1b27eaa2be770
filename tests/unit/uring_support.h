// Helpers shared by the io_uring tests (test_uring.cpp,
// test_transport_uring.cpp): a real libevent loop to run the Ring on, and
// connected TCP pairs over loopback.
#pragma once

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <event2/event.h>

#include "runtime/uring.h"

namespace uring_test {

// An event_base with a 5 ms tick, so that a turn never blocks for long.
class Loop {
public:
    Loop() {
        base_ = event_base_new();
        REQUIRE(base_);
        tick_ = event_new(base_, -1, EV_PERSIST, [](evutil_socket_t, short, void*) {}, nullptr);
        timeval tv{0, 5000};
        event_add(tick_, &tv);
    }
    ~Loop() {
        event_free(tick_);
        event_base_free(base_);
    }
    Loop(const Loop&) = delete;
    Loop& operator=(const Loop&) = delete;

    event_base* base() const { return base_; }
    // One loop turn: waits for at least one event (the tick at the latest).
    void turn() { event_base_loop(base_, EVLOOP_ONCE); }
    // Turns until <done> or <ms> milliseconds have passed; returns <done>.
    bool run_until(const std::function<bool()>& done, int ms = 5000) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (!done()) {
            if (std::chrono::steady_clock::now() > deadline) return false;
            turn();
        }
        return true;
    }
    // Turns for <ms> milliseconds.
    void run_for(int ms) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (std::chrono::steady_clock::now() < deadline) turn();
    }

private:
    event_base* base_ = nullptr;
    event* tick_ = nullptr;
};

inline std::unique_ptr<runtime::uring::Ring> make_ring(Loop& loop, const runtime::uring::Options& options = {}) {
    std::string error;
    std::unique_ptr<runtime::uring::Ring> ring = runtime::uring::Ring::create(loop.base(), error, options);
    INFO(error);
    REQUIRE(ring);
    return ring;
}

// Two connected, non-blocking TCP sockets over 127.0.0.1.
struct TcpPair {
    int near = -1;  // the side a transport gets
    int far = -1;   // the peer the test drives directly
};

inline TcpPair tcp_pair() {
    const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listener >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(listen(listener, 1) == 0);
    REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    TcpPair pair;
    pair.far = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(connect(pair.far, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    pair.near = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    REQUIRE(pair.near >= 0);
    close(listener);
    REQUIRE(fcntl(pair.far, F_SETFL, fcntl(pair.far, F_GETFL) | O_NONBLOCK) == 0);
    return pair;
}

// The far end of a pair, driven by the loop with plain recv()/send(): what
// it was given to write goes out as the socket takes it; what arrives is
// kept (while reading).
class Peer {
public:
    Peer(Loop& loop, int fd) : fd_(fd) {
        event_ = event_new(loop.base(), fd, EV_READ | EV_WRITE | EV_PERSIST, &Peer::on_io, this);
        update();
    }
    ~Peer() {
        event_free(event_);
        if (fd_ >= 0) close(fd_);
    }
    Peer(const Peer&) = delete;
    Peer& operator=(const Peer&) = delete;

    int fd() const { return fd_; }
    void write(const std::string& bytes) {
        out_ += bytes;
        flush();
    }
    std::size_t unsent() const { return out_.size() - sent_; }
    void set_reading(bool on) {
        reading_ = on;
        update();
    }

    std::string received;
    bool eof = false;
    int error = 0;  // errno of a failed recv()

private:
    static void on_io(evutil_socket_t, short what, void* self) {
        auto* peer = static_cast<Peer*>(self);
        if (what & EV_READ) peer->drain();
        if (what & EV_WRITE) peer->flush();
    }
    void drain() {
        char chunk[65536];
        for (;;) {
            const ssize_t n = recv(fd_, chunk, sizeof chunk, 0);
            if (n > 0) {
                received.append(chunk, static_cast<std::size_t>(n));
                continue;
            }
            if (n == 0) eof = true;
            if (n < 0 && errno != EAGAIN) error = errno;
            break;
        }
        update();
    }
    void flush() {
        while (sent_ < out_.size()) {
            const ssize_t n = ::send(fd_, out_.data() + sent_, out_.size() - sent_, MSG_NOSIGNAL);
            if (n <= 0) break;
            sent_ += static_cast<std::size_t>(n);
        }
        update();
    }
    void update() {
        event_del(event_);
        short what = EV_PERSIST;
        if (reading_ && !eof && error == 0) what |= EV_READ;
        if (sent_ < out_.size()) what |= EV_WRITE;
        event_assign(event_, event_get_base(event_), fd_, what, &Peer::on_io, this);
        if (what != EV_PERSIST) event_add(event_, nullptr);
    }

    int fd_;
    event* event_ = nullptr;
    std::string out_;
    std::size_t sent_ = 0;
    bool reading_ = true;
};

// Bytes that differ from one offset to the next, so that a reordering or a
// lost chunk shows up in a comparison.
inline std::string pattern(std::size_t length, unsigned seed) {
    std::string out(length, '\0');
    std::uint32_t x = seed * 2654435761u + 1;
    for (std::size_t i = 0; i < length; ++i) {
        x = x * 1664525u + 1013904223u;
        out[i] = static_cast<char>(x >> 24);
    }
    return out;
}

}  // namespace uring_test
