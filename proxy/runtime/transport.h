// The byte transport under a tunnel: what the tunnel policy (tunnel.cpp)
// needs from each of its two sides, and nothing of how the bytes move.
//
// A tunnel reads what has arrived, writes with backpressure and, at the end,
// releases the connection. Behind this interface sit a plain socket and a TLS
// session on a socket (transport_socket.cpp), an HTTP/2 stream
// (transport_stream.cpp: one end of the bufferevent pair that
// runtime/h2_connection.cpp feeds from the stream's DATA frames and window),
// and a socket driven by io_uring (transport_uring.cpp). The frame rules, the
// close handshake, timers, heartbeats, drains and accounting are written once
// against it, so every rule holds on every transport, and a new transport is
// a new file rather than a branch inside the policy (as h2o's h2o_socket_t
// or Envoy's Network::Connection: the filter chain does not know whether it
// runs over TLS).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace runtime {

// Which connection of a session.
enum class Side { Client, Backend };

// What a transport tells its tunnel. Any of these calls may end the session
// and free the transport that makes it: a transport touches nothing of its
// own after one unless it knows it survived (see Transport::Survival).
class TransportUser {
public:
    // read() has something to report: bytes, the end of the stream, or an error.
    virtual void transport_readable(Side side) = 0;
    // Queued bytes went out: queued() is lower than it was (possibly 0).
    virtual void transport_drained(Side side) = 0;
    // A write failed (reset, broken pipe): the connection is gone.
    virtual void transport_failed(Side side) = 0;

protected:
    ~TransportUser() = default;
};

// What one read() produced.
struct TransportRead {
    std::size_t got = 0;  // bytes placed at the front of the caller's buffer
    // 0 while the stream is open; else how it ended: kEof (the peer closed:
    // FIN, close_notify, END_STREAM) or kError (a reset, a TLS failure).
    // Bytes read before the end are reported in the same result.
    short closed = 0;
    static constexpr short kEof = 0x10;    // = BEV_EVENT_EOF
    static constexpr short kError = 0x20;  // = BEV_EVENT_ERROR
};

class Transport {
public:
    // Releases the connection: a TLS session sends close_notify unless it
    // failed, then the socket is closed (or the stream ends). Queued bytes not
    // yet written are dropped: a tunnel that wants them delivered waits for
    // queued() to reach 0 first.
    virtual ~Transport() {
        if (survival_) *survival_ = false;
    }

    // Reads what has arrived, at most <into>.size() bytes. When the transport
    // holds more than fitted (TLS records read ahead, a buffered stream), it
    // has scheduled another transport_readable() itself.
    virtual TransportRead read(std::span<std::uint8_t> into) = 0;

    // Writes <length> bytes after any queued ones: what the connection does
    // not take at once is queued (and written when it is ready), so a send
    // always succeeds from the caller's view. A failure is reported by
    // transport_failed() on the next loop turn, never from inside send().
    virtual void send(const std::uint8_t* data, std::size_t length) = 0;

    // Bytes accepted by send() and not yet handed to the kernel or stream:
    // the tunnel stops reading the other side while this is over
    // limits.buffer_bytes.
    virtual std::size_t queued() const = 0;

    // Whether transport_readable() is wanted. Off: backpressure (the other
    // side is full), or nothing more is wanted from this side.
    virtual void set_reading(bool on) = 0;

    // One transport_readable() on the next loop turn even if nothing new
    // arrives: the tunnel holds bytes of this side it has yet to scan.
    virtual void wake_reader() = 0;

protected:
    // Set while a TransportUser call is made, so that the transport can tell
    // whether it was destroyed by it:
    //   Survival alive(this); user.transport_x(side); if (!alive) return;
    class Survival {
    public:
        explicit Survival(Transport& transport) : transport_(transport) { transport_.survival_ = &alive_; }
        ~Survival() {
            if (alive_) transport_.survival_ = nullptr;
        }
        Survival(const Survival&) = delete;
        Survival& operator=(const Survival&) = delete;
        explicit operator bool() const { return alive_; }

    private:
        Transport& transport_;
        bool alive_ = true;
    };
private:
    bool* survival_ = nullptr;
};

}  // namespace runtime
