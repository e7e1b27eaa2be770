// An HTTP/2 client connection (ALPN "h2" on TLS listeners, prior-knowledge
// h2c on plain listeners with http2 = true): nghttp2 does the framing, HPACK
// and flow control; this glue maps each request stream onto a Session of its
// own. The stream's header block becomes an HTTP/1.1 request head
// (h2map::to_http1) written into one end of a libevent bufferevent pair; the
// Session reads it from the other end exactly as from a socket, so route
// choice, pinning, the Origin and JWT checks, rate limits, X-Forwarded-*, the
// refusal relay, plain HTTP exchanges and the whole tunnel policy (frame
// rules, close handshake, timers, heartbeats, drains, 1001/1009/1012/1014,
// accounting) are the code an HTTP/1.1 client meets. The Session's response
// head comes back through the pair and becomes the stream's HEADERS
// (h2map::from_http1); the bytes behind it become DATA.
//
// Flow control is backpressure: a stream's receive window is replenished
// (nghttp2_session_consume) only when the Session takes the bytes out of the
// pair, and the Session stops taking them while its back end's output is over
// limits.buffer_bytes; the reverse direction stops at our end's read high
// watermark (limits.buffer_bytes), which makes the Session stop reading its
// back end. nghttp2 output is produced only while the socket's output is
// under a bound.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "runtime/generation.h"

struct nghttp2_session;

namespace runtime {

class Worker;
class Session;

class H2Connection {
public:
    // Takes over <bev>, the client's connection (TLS or plain) with what it
    // has read so far. <host> is the session that accepted it: it keeps the
    // connection's accounting and is told when the connection ends.
    H2Connection(Worker& worker, Session& host, bufferevent* bev, std::shared_ptr<const Generation> generation,
                 const config::Listener& listener, std::string peer_ip, std::string client_text, bool tls);
    ~H2Connection();
    H2Connection(const H2Connection&) = delete;
    H2Connection& operator=(const H2Connection&) = delete;

    // Sends our SETTINGS and processes what was read. False when nghttp2
    // could not be set up (the host then ends the connection).
    bool start();
    // SIGTERM: GOAWAY, then the connection ends once its streams have (their
    // sessions get their own close frames from the worker).
    void shut_down();

    std::size_t stream_count() const { return streams_.size(); }

    struct Stream;  // one request stream (h2_connection.cpp)

private:
    static void on_read(bufferevent* bev, void* self);
    static void on_write(bufferevent* bev, void* self);
    static void on_event(bufferevent* bev, short what, void* self);
    static void on_wake(evutil_socket_t, short, void* self);
    static void on_idle(evutil_socket_t, short, void* self);

    friend struct H2Callbacks;

    void receive();
    void schedule();
    void flush();
    void fail(const char* reason);
    void arm_idle();
    void dispatch(Stream& stream);
    void answer(Stream& stream, int status, const std::string& body);
    void stream_readable(Stream& stream);
    void stream_ended_by_session(Stream& stream);
    void stream_closed(std::int32_t id, std::uint32_t error_code);
    void deliver(Stream& stream, const std::uint8_t* data, std::size_t length);

    Worker& worker_;
    Session& host_;
    bufferevent* bev_;
    std::shared_ptr<const Generation> generation_;
    const config::Listener& listener_;
    std::string peer_ip_;
    std::string client_text_;
    const char* proto_;
    nghttp2_session* session_ = nullptr;
    event* wake_ = nullptr;   // deferred work: produce output, end the connection
    event* idle_ = nullptr;   // no stream for timeouts.keepalive: GOAWAY and close
    std::map<std::int32_t, std::unique_ptr<Stream>> streams_;
    bool closing_ = false;    // GOAWAY sent: ends once no stream is left
    bool dead_ = false;       // the connection failed: the host ends it on the next wake
    bool failing_ = false;    // a protocol error or attack bound: GOAWAY queued, the idle timer ends it
};

}  // namespace runtime
