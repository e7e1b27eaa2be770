#include "runtime/session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>

#include "auth/jwt.h"
#include "balance/chash.h"
#include "net/cidr.h"
#include "net/proxy_protocol.h"
#include "net/stream_socket.h"
#include "net/tls.h"
#include "runtime/forward.h"
#include "runtime/worker.h"
#include "runtime/session_internal.h"
#include "runtime/transport_tls.h"
#include "runtime/transport_socket.h"
#include "runtime/transport_stream.h"
#include "runtime/transport_uring.h"

namespace runtime {

using detail::kCloseLingerMs;
using detail::side_name;

namespace {

// Largest read or write a tunnel does in one system call.
constexpr std::size_t kMaxSingleIo = 128 * 1024;

}  // namespace

// ---- Tunnel ------------------------------------------------------------------

void Session::open_tunnel(bool deflate, std::string_view client_head) {
    timespec opened{};
    clock_gettime(CLOCK_MONOTONIC, &opened);
    const timespec& accepted = handshake_->accepted_at;
    std::int64_t micros = (opened.tv_sec - accepted.tv_sec) * 1000000 + (opened.tv_nsec - accepted.tv_nsec) / 1000;
    worker_.metrics().observe_handshake(static_cast<std::uint64_t>(std::max<std::int64_t>(micros, 0)));
    const config::Config& config = generation_->config();
    from_client_ = Flow(ws::ScannerPolicy{ws::Direction::ClientToServer, deflate, config.limits.max_message_bytes});
    from_backend_ = Flow(ws::ScannerPolicy{ws::Direction::ServerToClient, deflate, 0});
    std::int64_t now = worker_.now_ms();
    client_.last_rx_ms = backend_.last_rx_ms = last_activity_ms_ = now;
    set_state(SessionState::Open);
    arm_timer(next_tunnel_deadline() - now);
    for (Side side : {Side::Client, Side::Backend}) {
        endpoint(side).transport = make_transport(side);
        if (!endpoint(side).transport) {
            record_.reason = "out of memory";
            record_.close_by = "proxy";
            finish();
            return;
        }
    }
    // <client_head> may live in the handshake's buffers: sent before they go.
    client_.transport->send(reinterpret_cast<const std::uint8_t*>(client_head.data()), client_head.size());
    // From here on no head is parsed and no header copy is needed.
    handshake_.reset();
    for (Side side : {Side::Client, Side::Backend}) {
        update_reading(side);
        // Bytes that came behind the heads are scanned on the next turn.
        if (endpoint(side).carry) endpoint(side).transport->wake_reader();
    }
}

// The transport that carries <side>'s tunnel, built from what its handshake
// used: an HTTP/2 stream keeps its pair end; a socket leaves its bufferevent
// (plain, or TLS with the session taken over) or its handshake event. What
// a bufferevent still holds moves along: unsent output (the 101 on its way)
// is sent, unread input (frames right behind a head) becomes the carry.
// Null when out of memory (the connection is then closed).
std::unique_ptr<Transport> Session::make_transport(Side side) {
    Endpoint& peer = endpoint(side);
    const std::size_t high = generation_->config().limits.buffer_bytes;
    const std::size_t max_io = std::min(high, kMaxSingleIo);
    if (peer.h2) {
        bufferevent* end = peer.bev;
        peer.bev = nullptr;
        return make_stream_transport(end, *this, side, high / 2);
    }
    if (!peer.bev) {
        // A plain back end, connected and read without a bufferevent.
        const int fd = peer.fd;
        event_free(peer.io);
        peer.io = nullptr;
        peer.interest = 0;
        peer.fd = -1;
        return make_plain_transport(fd, side, max_io);
    }
    const int fd = bufferevent_getfd(peer.bev);
    SSL* ssl = nullptr;
    if (!peer.plain) {
        // The bufferevent frees its SSL and closes the socket its BIO names:
        // the session is kept with a reference of ours, and gets a BIO that
        // names no socket.
        ssl = bufferevent_openssl_get_ssl(peer.bev);
        if (!raw_tls::take_over(ssl, fd)) return nullptr;
        SSL_up_ref(ssl);
    }
    evbuffer* input = bufferevent_get_input(peer.bev);
    if (const std::size_t unread = evbuffer_get_length(input); unread > 0) {
        peer.carry = std::make_unique<std::string>(reinterpret_cast<const char*>(evbuffer_pullup(input, -1)), unread);
    }
    std::unique_ptr<Transport> transport =
        ssl ? make_socket_transport(worker_.base(), fd, ssl, *this, side, max_io) : make_plain_transport(fd, side, max_io);
    // Sent now rather than on the next turn: the write interest is then
    // never armed, at the cost of nothing.
    evbuffer* output = bufferevent_get_output(peer.bev);
    if (const std::size_t unsent = evbuffer_get_length(output); transport && unsent > 0) {
        transport->send(evbuffer_pullup(output, -1), unsent);
    }
    // A plain bufferevent forgets the socket, so that freeing it does not
    // close it (the transport has it now).
    if (peer.plain) bufferevent_setfd(peer.bev, -1);
    bufferevent_free(peer.bev);
    peer.bev = nullptr;
    return transport;
}

// A plain socket's transport: io_uring when this session's generation asks
// for it and the worker has a ring, else readiness and recv/send.
std::unique_ptr<Transport> Session::make_plain_transport(int fd, Side side, std::size_t max_io) {
    if (generation_->config().server.io == config::Io::IoUring) {
        if (uring::Ring* ring = worker_.io_uring()) return make_uring_transport(*ring, fd, *this, side, max_io);
    }
    return make_socket_transport(worker_.base(), fd, nullptr, *this, side, max_io);
}

void Session::transport_readable(Side side) { tunnel_read(side); }

void Session::transport_failed(Side side) { tunnel_peer_closed(side, TransportRead::kError); }

// <side>'s queue shrank: a flushing side may be released, and the other
// side, paused for this one, is read again once under the low watermark.
void Session::transport_drained(Side side) {
    Endpoint& peer = endpoint(side);
    const std::size_t left = output_length(side);
    if (peer.flushing && left == 0) {
        release(side);
        maybe_finish_closing();
        return;
    }
    Endpoint& source = endpoint(other(side));
    if (source.read_paused && left < generation_->config().limits.buffer_bytes / 2) {
        source.read_paused = false;
        update_reading(other(side));
    }
}

// Tells <side>'s transport whether it is read: not while backpressure
// pauses it, after its end, or once it is released.
void Session::update_reading(Side side) {
    Endpoint& peer = endpoint(side);
    if (peer.transport && !peer.gone) peer.transport->set_reading(!peer.read_done && !peer.read_paused);
}

// Reads what <side> has (behind its carry) into the worker's read buffer and
// scans it in place.
void Session::tunnel_read(Side side) {
    Endpoint& src = endpoint(side);
    if (!src.transport || src.gone) return;
    std::span<std::uint8_t> buffer = worker_.read_buffer();
    // What the handshake's buffers left can exceed half the read buffer:
    // then it is scanned alone, and the transport read on the next turn.
    if (src.carry && src.carry->size() > buffer.size() / 2) {
        const std::unique_ptr<std::string> carried = std::move(src.carry);
        if (scan(side, reinterpret_cast<const std::uint8_t*>(carried->data()), carried->size()) && !src.gone) {
            src.transport->wake_reader();
        }
        return;
    }
    const std::size_t carried = src.carry ? src.carry->size() : 0;
    if (src.carry) {
        std::memcpy(buffer.data(), src.carry->data(), carried);
        src.carry.reset();
    }
    const std::size_t room = std::min({buffer.size() - carried, kMaxSingleIo,
                                       static_cast<std::size_t>(generation_->config().limits.buffer_bytes)});
    TransportRead got;
    if (!src.read_done && !src.read_paused) got = src.transport->read(buffer.subspan(carried, room));
    if (carried + got.got > 0 && !scan(side, buffer.data(), carried + got.got)) return;
    if (got.closed != 0) tunnel_peer_closed(side, got.closed);
}

// Scans <length> bytes from <from> (the carry and a fresh read) and forwards
// them: consecutive data bytes as one run (many small frames in one read
// cost one send, not one per frame), control frames one by one. An
// incomplete frame header or control frame at the end becomes the carry.
// Returns false when the session left the tunnel (it may be freed: touch
// nothing).
bool Session::scan(Side from, const std::uint8_t* data, std::size_t length) {
    Endpoint& src = endpoint(from);
    Endpoint& dst = endpoint(other(from));
    Flow& flow = flow_from(from);
    const std::int64_t now = worker_.now_ms();
    std::size_t run_start = 0;  // the run of data bytes not forwarded yet is [run_start, pos)
    std::size_t pos = 0;
    while (pos < length) {
        // Nothing may follow a close frame (RFC 6455 §5.5.1): dropped.
        if (src.close_received) break;
        const std::size_t available = length - pos;
        std::span<const std::uint8_t> front;
        if (flow.scanner.at_frame_boundary()) front = {data + pos, std::min(available, ws::kMaxControlFrame)};
        const ws::Step step = flow.scanner.step(front, available);
        switch (step.kind) {
            case ws::Step::Kind::NeedMore:
                forward(from, data + run_start, pos - run_start);
                src.carry = std::make_unique<std::string>(reinterpret_cast<const char*>(data + pos), available);
                return true;
            case ws::Step::Kind::Forward:
                pos += step.bytes;
                count_forwarded(from, step, now);
                break;
            case ws::Step::Kind::ControlFrame:
                forward(from, data + run_start, pos - run_start);
                if (from == Side::Client) record_.bytes_in += step.bytes;
                pos += step.bytes;
                run_start = pos;
                if (!handle_control_frame(from, data + pos - step.bytes, step.header)) return false;
                break;
            case ws::Step::Kind::Error:
                // The frames before the bad one were valid: they go through.
                forward(from, data + run_start, pos - run_start);
                protocol_failure(from, step.close_code, step.reason);
                return false;
        }
        if (dst.ping_pending && flow.scanner.at_frame_boundary()) {
            forward(from, data + run_start, pos - run_start);
            run_start = pos;
            send_ping(other(from));
        }
    }
    forward(from, data + run_start, pos - run_start);
    return true;
}

// A run of data-frame bytes from <from>, for the other side. Backpressure:
// once the destination's queue reaches limits.buffer_bytes, <from> is no
// longer read (its bytes wait in the kernel or the HTTP/2 window) until the
// queue is under half of that.
void Session::forward(Side from, const std::uint8_t* data, std::size_t length) {
    if (length == 0) return;
    Endpoint& dst = endpoint(other(from));
    if (from == Side::Client) record_.bytes_in += length;
    // A destination closed to data: frames were scanned (a close reply or a
    // pong must be seen) but their bytes are dropped.
    if (dst.gone || dst.close_sent) return;
    if (from == Side::Backend) record_.bytes_out += length;
    dst.transport->send(data, length);
    if (dst.transport->queued() >= generation_->config().limits.buffer_bytes) {
        endpoint(from).read_paused = true;
        update_reading(from);
    }
}

// Bookkeeping for data-frame bytes from <from> that go through: metrics, the
// heartbeat's and idle timeout's clocks, and the message count.
void Session::count_forwarded(Side from, const ws::Step& step, std::int64_t now) {
    obs::WorkerMetrics& metrics = worker_.metrics();
    const auto dir = static_cast<std::size_t>(from == Side::Client ? obs::Dir::ClientToBackend : obs::Dir::BackendToClient);
    metrics.bytes[dir].add(step.bytes);
    if (step.frame_start) {
        Endpoint& src = endpoint(from);
        src.last_rx_ms = last_activity_ms_ = now;
        src.ping_outstanding = false;
        metrics.frames[dir].add();
    }
    if (step.message_end) {
        ++flow_from(from).messages;
        metrics.messages[dir].add();
    }
}

// A whole control frame from <from> (already removed from its input). Returns
// false when the session left the tunnel (it may be freed: touch nothing).
bool Session::handle_control_frame(Side from, const std::uint8_t* frame, const ws::FrameHeader& header) {
    Endpoint& src = endpoint(from);
    Endpoint& dst = endpoint(other(from));
    std::uint8_t payload[ws::kMaxControlPayload];
    std::size_t length = static_cast<std::size_t>(header.payload_len);
    std::memcpy(payload, frame + header.header_len, length);
    if (header.masked) ws::apply_mask(std::span<std::uint8_t>(payload, length), header.mask_key);
    std::int64_t now = worker_.now_ms();
    src.last_rx_ms = now;
    std::size_t frame_bytes = header.header_len + length;

    if (header.opcode == static_cast<std::uint8_t>(ws::Opcode::Pong) && src.ping_outstanding &&
        length == src.ping_payload.size() && std::memcmp(payload, src.ping_payload.data(), length) == 0) {
        // The answer to our own heartbeat: consumed, and not activity.
        src.ping_outstanding = false;
        return true;
    }
    src.ping_outstanding = false;

    if (header.opcode == static_cast<std::uint8_t>(ws::Opcode::Close)) {
        ws::ClosePayload close = ws::parse_close_payload(std::span<const std::uint8_t>(payload, length));
        if (!close.ok) {
            protocol_failure(from, ws::close_code::protocol_error, "invalid close frame");
            return false;
        }
        src.close_received = true;
        if (state_ == SessionState::Open) {
            record_.close_code = close.code == ws::close_code::no_status ? 0 : close.code;
            record_.close_by = side_name(from);
            record_.reason = from == Side::Client ? "client closed" : "backend closed";
        }
        if (!dst.gone && !dst.close_sent) {
            send_to(other(from), frame, frame_bytes);
            if (from == Side::Backend) record_.bytes_out += frame_bytes;
            dst.close_sent = true;
        }
        if (state_ == SessionState::Open) {
            set_state(SessionState::Closing);
            arm_timer(kCloseLingerMs);
        }
        maybe_finish_closing();
        return false;
    }

    // Pings, and pongs that answer the peer's own pings, pass through.
    last_activity_ms_ = now;
    if (!dst.gone && !dst.close_sent) {
        auto dir = static_cast<std::size_t>(from == Side::Client ? obs::Dir::ClientToBackend : obs::Dir::BackendToClient);
        worker_.metrics().frames[dir].add();
        worker_.metrics().bytes[dir].add(frame_bytes);
        send_to(other(from), frame, frame_bytes);
        if (from == Side::Backend) record_.bytes_out += frame_bytes;
    }
    return true;
}

namespace {

// Frames we originate towards the back end are masked with a fresh key, as a
// client's must be (RFC 6455 §5.3); frames towards the client are not.
std::optional<std::array<std::uint8_t, 4>> mask_towards(Side to, std::mt19937_64& rng) {
    if (to != Side::Backend) return std::nullopt;
    const auto bits = static_cast<std::uint32_t>(rng());
    std::array<std::uint8_t, 4> mask{};
    std::memcpy(mask.data(), &bits, sizeof bits);
    return mask;
}

}  // namespace

// Sends our heartbeat ping to <to> now if the stream towards it is at a
// frame boundary (RFC 6455 §5.4), else as soon as it is.
void Session::send_ping(Side to) {
    Endpoint& peer = endpoint(to);
    if (peer.gone || peer.close_sent) return;
    if (!flow_from(other(to)).scanner.at_frame_boundary()) {
        peer.ping_pending = true;
        return;
    }
    peer.ping_pending = false;
    std::uint64_t random = worker_.rng()();
    std::memcpy(peer.ping_payload.data(), &random, sizeof random);
    std::uint8_t frame[ws::kMaxControlFrame];
    const std::optional<std::array<std::uint8_t, 4>> mask = mask_towards(to, worker_.rng());
    std::size_t n = ws::encode_control_frame(frame, ws::Opcode::Ping, peer.ping_payload, mask);
    send_to(to, frame, n);
    if (to == Side::Client) record_.bytes_out += n;
    peer.ping_outstanding = true;
    peer.ping_sent_ms = worker_.now_ms();
    worker_.metrics().heartbeat_pings.add();
}

// Sends a close frame of our own to <to>. When the stream towards <to> is in
// the middle of a frame, a clean close is impossible: its connection is then
// released once its output drains.
void Session::send_close(Side to, std::uint16_t code, std::string_view reason) {
    Endpoint& peer = endpoint(to);
    if (peer.gone || peer.close_sent) return;
    peer.close_sent = true;
    if (!flow_from(other(to)).scanner.at_frame_boundary()) {
        flush_and_release(to);
        return;
    }
    std::uint8_t frame[ws::kMaxControlFrame];
    const std::optional<std::array<std::uint8_t, 4>> mask = mask_towards(to, worker_.rng());
    std::size_t n = ws::encode_close_frame(frame, code, reason, mask);
    send_to(to, frame, n);
    if (to == Side::Client) record_.bytes_out += n;
}

void Session::protocol_failure(Side offender, std::uint16_t code, std::string_view reason) {
    worker_.log().log(obs::Level::Info, "session {}: {} from {}, closing with {}", record_.request_id, reason,
                      side_name(offender), code);
    // The offender's further bytes are meaningless: stop reading them.
    Endpoint& bad = endpoint(offender);
    bad.carry.reset();
    bad.close_received = true;
    std::string_view log_reason = code == ws::close_code::message_too_big ? "message too big" : "protocol error";
    send_close(offender, code, reason);
    send_close(other(offender), ws::close_code::going_away, "");
    begin_closing(log_reason, "proxy", code);
}

// A peer that sent its close frame and then half-closed (FIN) may still be
// reading, for the close frame that answers it (RFC 6455 §5.5.1, §7.1.1): its
// connection is kept for writing until that reply is relayed or the close
// linger ends.
bool Session::awaits_close_reply(Side side, short what) const {
    const Endpoint& peer = side == Side::Client ? client_ : backend_;
    return (what & TransportRead::kEof) && !(what & TransportRead::kError) && peer.close_received &&
           !peer.close_sent && !peer.gone;
}

// <side>'s TCP connection ended without a close frame.
void Session::peer_gone(Side side, const char* reason) {
    release(side);
    endpoint(side).close_received = true;
    std::uint16_t code = side == Side::Backend ? ws::close_code::bad_gateway : ws::close_code::going_away;
    send_close(other(side), code, side == Side::Backend ? "backend reset" : "");
    resume_survivor(other(side));
    begin_closing(reason, side_name(side), code);
}

// The other side of <side> is gone, so nothing <side> sends can be held up
// any more: reading it resumes even if backpressure had paused it, so that
// its close reply is seen at once rather than after the close linger.
void Session::resume_survivor(Side side) {
    Endpoint& peer = endpoint(side);
    if (peer.gone || peer.flushing) return;
    peer.read_paused = false;
    update_reading(side);
}

// <side>'s connection ended (EOF or error) while the tunnel is open or
// closing.
void Session::tunnel_peer_closed(Side side, short what) {
    if (state_ == SessionState::Open) {
        peer_gone(side, side == Side::Client ? "client vanished" : "backend reset");
        return;
    }
    if (awaits_close_reply(side, what)) {
        endpoint(side).read_done = true;
        update_reading(side);
        return;
    }
    release(side);
    maybe_finish_closing();
}

// Queues <length> bytes of ours (or a whole relayed control frame) for
// <to>, after anything already queued.
void Session::send_to(Side to, const std::uint8_t* data, std::size_t length) {
    Endpoint& peer = endpoint(to);
    if (peer.transport && !peer.gone) peer.transport->send(data, length);
}

std::size_t Session::output_length(Side side) const {
    const Endpoint& peer = side == Side::Client ? client_ : backend_;
    return peer.transport ? peer.transport->queued() : 0;
}

bool Session::monitors(Side side) const {
    const config::Heartbeat& hb = generation_->config().heartbeat;
    if (hb.interval.count() <= 0) return false;
    switch (hb.peers) {
        case config::HeartbeatPeers::Client: return side == Side::Client;
        case config::HeartbeatPeers::Backend: return side == Side::Backend;
        case config::HeartbeatPeers::Both: return true;
    }
    return false;
}

std::int64_t Session::next_tunnel_deadline() const {
    const config::Config& config = generation_->config();
    std::int64_t next = std::min(drain_at_ms_, expire_at_ms_);
    if (config.timeouts.idle.count() > 0) next = std::min(next, last_activity_ms_ + config.timeouts.idle.count());
    for (Side side : {Side::Client, Side::Backend}) {
        if (!monitors(side)) continue;
        const Endpoint& peer = side == Side::Client ? client_ : backend_;
        std::int64_t due = peer.ping_outstanding ? peer.ping_sent_ms + config.heartbeat.timeout.count()
                                                 : peer.last_rx_ms + config.heartbeat.interval.count();
        next = std::min(next, due);
    }
    return next;
}

// Deadlines are checked lazily: frames only record timestamps, and this
// timer re-arms itself for the earliest deadline still ahead.
void Session::on_tunnel_timer() {
    const config::Config& config = generation_->config();
    std::int64_t now = worker_.now_ms();
    if (config.timeouts.idle.count() > 0 && now - last_activity_ms_ >= config.timeouts.idle.count()) {
        send_close(Side::Client, ws::close_code::going_away, "idle timeout");
        send_close(Side::Backend, ws::close_code::going_away, "idle timeout");
        worker_.metrics().idle_timeouts.add();
        begin_closing("idle timeout", "proxy", ws::close_code::going_away);
        return;
    }
    if (now >= drain_at_ms_ && drain_code_ == ws::close_code::going_away) {
        send_close(Side::Client, ws::close_code::going_away, "upgrade");
        send_close(Side::Backend, ws::close_code::going_away, "upgrade");
        begin_closing("upgrade", "proxy", ws::close_code::going_away);
        return;
    }
    if (now >= expire_at_ms_) {
        send_close(Side::Client, ws::close_code::policy_violation, "token expired");
        send_close(Side::Backend, ws::close_code::going_away, "token expired");
        begin_closing("token expired", "proxy", ws::close_code::policy_violation);
        return;
    }
    if (now >= drain_at_ms_) {
        send_close(Side::Client, ws::close_code::service_restart, "service restart");
        send_close(Side::Backend, ws::close_code::service_restart, "service restart");
        worker_.metrics().drained_sessions.add();
        begin_closing(operator_drain_ ? "drain" : "backend removed", "proxy", ws::close_code::service_restart);
        return;
    }
    for (Side side : {Side::Client, Side::Backend}) {
        if (!monitors(side)) continue;
        Endpoint& peer = endpoint(side);
        if (peer.ping_outstanding && now - peer.ping_sent_ms >= config.heartbeat.timeout.count()) {
            worker_.log().log(obs::Level::Info, "session {}: {} missed its heartbeat", record_.request_id,
                              side_name(side));
            release(side);
            peer.close_received = true;
            send_close(other(side), ws::close_code::going_away, "heartbeat timeout");
            resume_survivor(other(side));
            worker_.metrics().heartbeat_timeouts.add();
            begin_closing("heartbeat timeout", "proxy", ws::close_code::going_away);
            return;
        }
        if (!peer.ping_outstanding && !peer.ping_pending &&
            now - peer.last_rx_ms >= config.heartbeat.interval.count()) {
            send_ping(side);
        }
    }
    std::int64_t next = next_tunnel_deadline();
    // A ping waiting for a frame boundary is retried on the next tick.
    if (client_.ping_pending || backend_.ping_pending) next = std::min(next, now + 100);
    arm_timer(next == INT64_MAX ? 3600 * 1000 : next - now);
}

}  // namespace runtime
