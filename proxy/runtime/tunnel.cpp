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

namespace runtime {

using detail::kCloseLingerMs;
using detail::side_name;

namespace {

// Largest read or write a tunnel does in one system call.
constexpr std::size_t kMaxSingleIo = 128 * 1024;

// The front of an evbuffer as the contiguous extents evbuffer_peek() reports,
// so that a frame header is read in place when it lies within one chain (the
// common case) rather than copied out with evbuffer_ptr_set() and
// evbuffer_copyout_from() for every frame. Valid only while the buffer is not
// modified: reset() after every removal.
class FrontPeek {
public:
    // The <want> bytes at <offset> of <buffer> (which holds at least
    // offset + want bytes): in place when contiguous, else copied into
    // <scratch>. Between resets <offset> never decreases.
    std::span<const std::uint8_t> at(evbuffer* buffer, std::size_t offset, std::size_t want, std::uint8_t* scratch) {
        if (!peeked_) {
            count_ = std::min(evbuffer_peek(buffer, -1, nullptr, extents_, kExtents), kExtents);
            index_ = 0;
            base_ = 0;
            peeked_ = true;
        }
        while (index_ < count_ && base_ + extents_[index_].iov_len <= offset) base_ += extents_[index_++].iov_len;
        if (index_ < count_ && offset - base_ + want <= extents_[index_].iov_len) {
            return {static_cast<const std::uint8_t*>(extents_[index_].iov_base) + (offset - base_), want};
        }
        evbuffer_ptr at;
        evbuffer_ptr_set(buffer, &at, offset, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(buffer, &at, scratch, want);
        return {scratch, want};
    }
    void reset() { peeked_ = false; }

private:
    static constexpr int kExtents = 8;
    evbuffer_iovec extents_[kExtents];
    int count_ = 0;
    int index_ = 0;         // the extent holding the last offset asked for
    std::size_t base_ = 0;  // offset of extents_[index_] in the buffer
    bool peeked_ = false;
};

}  // namespace

// ---- Tunnel ------------------------------------------------------------------

void Session::open_tunnel(bool deflate) {
    timespec opened{};
    clock_gettime(CLOCK_MONOTONIC, &opened);
    const timespec& accepted = handshake_->accepted_at;
    std::int64_t micros = (opened.tv_sec - accepted.tv_sec) * 1000000 + (opened.tv_nsec - accepted.tv_nsec) / 1000;
    worker_.metrics().observe_handshake(static_cast<std::uint64_t>(std::max<std::int64_t>(micros, 0)));
    // From here on no head is parsed and no header copy is needed.
    handshake_.reset();
    const config::Config& config = generation_->config();
    from_client_ = Flow(ws::ScannerPolicy{ws::Direction::ClientToServer, deflate, config.limits.max_message_bytes});
    from_backend_ = Flow(ws::ScannerPolicy{ws::Direction::ServerToClient, deflate, 0});
    std::int64_t now = worker_.now_ms();
    client_.last_rx_ms = backend_.last_rx_ms = last_activity_ms_ = now;
    set_state(SessionState::Open);
    arm_timer(next_tunnel_deadline() - now);
    // A plain back end is raw already; the client joins it, over TLS or not.
    if (backend_.plain) {
        if (!client_.h2) {
            switch_to_raw();
            return;
        }
        // An HTTP/2 stream is a bufferevent (one end of a pair): the plain
        // back end joins it in the bufferevent tunnel.
        if (!adopt_backend_bufferevent()) {
            release(Side::Backend);
            record_.reason = "out of memory";
            record_.close_by = "proxy";
            finish();
            return;
        }
    }
    std::size_t high = config.limits.buffer_bytes;
    // bufferevent_getfd() costs a locked control call: once per tunnel, not per write.
    for (Endpoint* e : {&client_, &backend_}) e->fd = e->plain ? bufferevent_getfd(e->bev) : -1;
    for (bufferevent* bev : {client_.bev, backend_.bev}) {
        // No read high watermark: pump() consumes every input it is given
        // except a partial frame header or control frame (< 140 bytes), and
        // it disables reading itself while the destination is over <high>,
        // so the input stays below one read (max_single_read) plus that.
        // libevent's watermark callback would instead re-add the read event
        // (event_add) on every read and every drain of the input.
        bufferevent_setwatermark(bev, EV_READ, 0, 0);
        bufferevent_setwatermark(bev, EV_WRITE, high / 2, 0);
        // libevent reads at most 16 KiB per call by default; bulk tunnels
        // then pay a read (and its FIONREAD) per 16 KiB.
        bufferevent_set_max_single_read(bev, std::min<std::size_t>(high, kMaxSingleIo));
        bufferevent_set_max_single_write(bev, std::min<std::size_t>(high, kMaxSingleIo));
        bufferevent_enable(bev, EV_READ);
    }
    pump(Side::Client);
    if (state_ == SessionState::Open || state_ == SessionState::Closing) pump(Side::Backend);
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

// Moves whole frames and payload chunks from <from>'s input to the other
// side without copying payload bytes, until the input is empty, the
// destination is over its high watermark (backpressure: stop reading the
// source until it drains), or a frame needs more bytes. Consecutive data
// bytes are forwarded as one run (one evbuffer move or one write), so many
// small frames in one read cost one transfer, not one per frame.
void Session::pump(Side from) {
    Endpoint& src = endpoint(from);
    Endpoint& dst = endpoint(other(from));
    Flow& flow = flow_from(from);
    if (!src.bev || src.gone) return;
    evbuffer* input = bufferevent_get_input(src.bev);
    const std::size_t high = generation_->config().limits.buffer_bytes;
    std::uint8_t front[ws::kMaxControlFrame];
    const std::int64_t now = worker_.now_ms();
    std::size_t length = evbuffer_get_length(input);  // kept current as bytes leave <input>
    std::size_t run = 0;  // bytes at the front of <input> decided to go to <dst>
    FrontPeek peek;
    // Sends the run on its way; <input> changes, so its extents are re-read.
    auto flush = [&] {
        flush_run(from, run);
        length -= run;
        run = 0;
        peek.reset();
    };

    for (;;) {
        if (src.close_received) {
            // Nothing may follow a close frame (RFC 6455 §5.5.1).
            flush_run(from, run);
            evbuffer_drain(input, evbuffer_get_length(input));
            return;
        }
        const std::size_t available = length - run;
        if (available == 0) break;
        // <dst>'s output grows only when a run is flushed or a frame of ours
        // is written, and run is 0 after both: checking then is enough.
        if (run == 0 && !dst.gone && !dst.close_sent &&
            evbuffer_get_length(bufferevent_get_output(dst.bev)) >= high) {
            bufferevent_disable(src.bev, EV_READ);
            break;
        }
        std::span<const std::uint8_t> header;
        if (flow.scanner.at_frame_boundary()) {
            // Only the header is needed to decide; a control frame is copied whole below.
            header = peek.at(input, run, std::min(available, ws::kMaxHeaderBytes), front);
        }
        ws::Step step = flow.scanner.step(header, available);
        switch (step.kind) {
            case ws::Step::Kind::NeedMore:
                flush_run(from, run);
                return;
            case ws::Step::Kind::Forward:
                run += step.bytes;
                count_forwarded(from, step, now);
                // Bound a run by the watermark so one huge read does not
                // bypass backpressure.
                if (run >= high) flush();
                break;
            case ws::Step::Kind::ControlFrame:
                flush();
                evbuffer_remove(input, front, step.bytes);
                if (from == Side::Client) record_.bytes_in += step.bytes;
                if (!handle_control_frame(from, front, step.header)) return;
                length = evbuffer_get_length(input);
                break;
            case ws::Step::Kind::Error:
                // The frames before the bad one were valid: they go through.
                flush_run(from, run);
                protocol_failure(from, step.close_code, step.reason);
                return;
        }
        if (dst.ping_pending && flow.scanner.at_frame_boundary()) {
            flush();
            send_ping(other(from));
        }
    }
    flush_run(from, run);
}

// Sends the first <bytes> of <from>'s input to the other side. When the
// destination has nothing queued and is a plain socket, the bytes are
// written straight from the source's buffer (one writev, no evbuffer move,
// no write event to arm); what the socket does not take is queued.
void Session::flush_run(Side from, std::size_t bytes) {
    if (bytes == 0) return;
    Endpoint& src = endpoint(from);
    Endpoint& dst = endpoint(other(from));
    evbuffer* input = bufferevent_get_input(src.bev);
    if (from == Side::Client) record_.bytes_in += bytes;
    if (dst.gone || dst.close_sent) {
        // The destination is closed to data: frames were scanned (a close
        // reply or a pong must be seen) but their bytes are dropped.
        evbuffer_drain(input, bytes);
        return;
    }
    if (from == Side::Backend) record_.bytes_out += bytes;
    evbuffer* output = bufferevent_get_output(dst.bev);
    if (dst.fd >= 0 && evbuffer_get_length(output) == 0) {
        int written = evbuffer_write_atmost(input, dst.fd, static_cast<ev_ssize_t>(bytes));
        if (written > 0) bytes -= static_cast<std::size_t>(written);
        if (bytes == 0) return;
    }
    evbuffer_remove_buffer(input, output, bytes);
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
    if (bad.bev) {
        evbuffer_drain(bufferevent_get_input(bad.bev), evbuffer_get_length(bufferevent_get_input(bad.bev)));
    } else {
        bad.carry.reset();
    }
    bad.close_received = true;
    std::string_view log_reason = code == ws::close_code::message_too_big ? "message too big" : "protocol error";
    send_close(offender, code, reason);
    send_close(other(offender), ws::close_code::going_away, "");
    begin_closing(log_reason, "proxy", code);
}

// A peer that sent its close frame and then half-closed (FIN) may still be
// reading, for the close frame that answers it (RFC 6455 §5.5.1, §7.1.1): its
// connection is kept for writing until that reply is relayed or the close
// linger ends. libevent has already stopped reading it.
bool Session::awaits_close_reply(Side side, short what) const {
    const Endpoint& peer = side == Side::Client ? client_ : backend_;
    return (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && peer.close_received && !peer.close_sent &&
           !peer.gone;
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
// its close reply is seen at once rather than after the close linger. The
// read callback is deferred to the next loop turn, after this one settles
// the session's state (and it is cancelled if the session ends first).
void Session::resume_survivor(Side side) {
    Endpoint& peer = endpoint(side);
    if (peer.gone || peer.flushing) return;
    if (!peer.bev) {
        // Raw: unread bytes wait in the kernel, and the level-triggered
        // read interest reports them on the next turn.
        peer.read_paused = false;
        raw_update_interest(side);
        return;
    }
    bufferevent_enable(peer.bev, EV_READ);
    bufferevent_trigger(peer.bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

// <side>'s connection ended (EOF or error) while the tunnel is open or
// closing.
void Session::tunnel_peer_closed(Side side, short what) {
    if (state_ == SessionState::Open) {
        peer_gone(side, side == Side::Client ? "client vanished" : "backend reset");
        return;
    }
    if (awaits_close_reply(side, what)) {
        Endpoint& peer = endpoint(side);
        if (!peer.bev) {
            peer.read_done = true;
            raw_update_interest(side);
        }
        return;
    }
    release(side);
    maybe_finish_closing();
}

// Queues <length> bytes of ours (or a whole relayed control frame) for
// <to>, after anything already queued.
void Session::send_to(Side to, const std::uint8_t* data, std::size_t length) {
    Endpoint& peer = endpoint(to);
    if (peer.bev) {
        bufferevent_write(peer.bev, data, length);
    } else {
        raw_send(to, data, length);
    }
}

std::size_t Session::output_length(Side side) const {
    const Endpoint& peer = side == Side::Client ? client_ : backend_;
    if (peer.bev) return evbuffer_get_length(bufferevent_get_output(peer.bev));
    return peer.pending ? evbuffer_get_length(peer.pending) : 0;
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
