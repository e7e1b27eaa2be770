// The tunnel to a plain back end, without bufferevents, and the plain back
// end's side of the handshake, which never has one. The client is a plain
// socket or a TLS session taken over from its bufferevent.
//
// Reads go into the worker's shared read buffer, are scanned frame by frame
// in place and sent straight to the other socket. A session keeps only what
// a socket did not take at once (Endpoint::pending) and the start of an
// incomplete frame header or control frame (Endpoint::carry, at most 139
// bytes). An idle tunnel therefore holds no buffer at all, and a forwarded
// read costs one recv() and one send(): no FIONREAD ioctl before each read
// and no evbuffer bookkeeping, which is what a bufferevent costs.
//
// A TLS client is read with SSL_read() into the same buffer, with OpenSSL's
// read-ahead on: one read() takes every record the socket holds. Records
// that OpenSSL has buffered raise no readiness event, so a TLS read goes on
// until SSL_read() wants the socket again (or the buffer is full, and the
// read is resumed on the next turn). Bytes for it go out with SSL_write().
// This spares the TLS path what bufferevent_openssl adds: a FIONREAD and
// two read() calls per record, and an epoll_ctl() pair per write to arm
// and disarm the write event (scenario t: 1.39 -> 1.06 us of CPU per
// message).
//
// Backpressure: when the destination's pending bytes reach
// limits.buffer_bytes, the source is no longer read (its bytes wait in the
// kernel, which then closes the TCP window); reading resumes once the
// destination is under half of that.
#include "runtime/session.h"
#include "runtime/session_raw.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "runtime/worker.h"

namespace runtime {

namespace {

// Largest read a raw tunnel does in one system call.
constexpr std::size_t kMaxRawRead = 128 * 1024;

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

}  // namespace

void Session::on_client_io(evutil_socket_t, short what, void* self) {
    static_cast<Session*>(self)->raw_io(Side::Client, what);
}

void Session::on_backend_io(evutil_socket_t, short what, void* self) {
    auto* s = static_cast<Session*>(self);
    switch (s->state_) {
        case SessionState::Connecting: s->send_head_plain(); break;
        case SessionState::AwaitingResponse: s->read_response_plain(); break;
        default: s->raw_io(Side::Backend, what); break;
    }
}

// The client's bufferevent hands over its socket (and TLS session) and what
// it holds: unsent output (the 101 on its way) becomes <pending>, unread
// input (frames right behind the request) becomes <carry>. The back end is
// raw already, its carry being what came behind the 101. Carried bytes are
// scanned on the loop's next turn; the 101 is sent at once.
void Session::switch_to_raw() {
    Endpoint& peer = client_;
    peer.fd = bufferevent_getfd(peer.bev);
    if (!peer.plain) {
        // The bufferevent frees its SSL and closes the socket its BIO names:
        // the session is kept with a reference of ours, and gets a BIO that
        // names no socket.
        SSL* ssl = bufferevent_openssl_get_ssl(peer.bev);
        if (!raw_tls::take_over(ssl, peer.fd)) {
            record_.reason = "out of memory";
            record_.close_by = "proxy";
            finish();
            return;
        }
        SSL_up_ref(ssl);
        peer.ssl = ssl;
    }
    // Copied, not moved: a socket bufferevent keeps the front of its
    // output and the end of its input frozen, which refuses moves.
    evbuffer* output = bufferevent_get_output(peer.bev);
    if (const std::size_t unsent = evbuffer_get_length(output); unsent > 0) {
        peer.pending = evbuffer_new();
        if (peer.pending) evbuffer_add(peer.pending, evbuffer_pullup(output, -1), unsent);
    }
    evbuffer* input = bufferevent_get_input(peer.bev);
    if (const std::size_t unread = evbuffer_get_length(input); unread > 0) {
        peer.carry = std::make_unique<std::string>(reinterpret_cast<const char*>(evbuffer_pullup(input, -1)), unread);
    }
    // A plain bufferevent forgets the socket, so that freeing it does not
    // close it.
    if (peer.plain) bufferevent_setfd(peer.bev, -1);
    bufferevent_free(peer.bev);
    peer.bev = nullptr;
    peer.io = event_new(worker_.base(), peer.fd, EV_PERSIST, &Session::on_client_io, this);
    if (!peer.io) {
        raw_release(peer);
        evutil_closesocket(peer.fd);
        peer.fd = -1;
        record_.reason = "out of memory";
        record_.close_by = "proxy";
        finish();
        return;
    }
    // Sent now rather than on the next turn: the client's write interest
    // is then never armed, at the cost of nothing.
    if (!raw_write_pending(Side::Client)) return;
    for (Side side : {Side::Client, Side::Backend}) {
        raw_update_interest(side);
        Endpoint& e = endpoint(side);
        // A TLS client may have sent records that OpenSSL already holds.
        if ((e.carry || e.ssl) && (e.interest & EV_READ)) event_active(e.io, EV_READ, 0);
    }
}

// Makes <side>'s event wait for what the endpoint needs now: reading unless
// paused, finished or released; writing while bytes are pending.
void Session::raw_update_interest(Side side) {
    Endpoint& peer = endpoint(side);
    if (!peer.io) return;
    short want = 0;
    if (!peer.gone && !peer.read_done && !peer.read_paused) want |= EV_READ;
    if (peer.pending || peer.tls_read_wants_write) want |= EV_WRITE;
    if (peer.tls_write_wants_read) want |= EV_READ;
    if (want == peer.interest) return;
    raw_set_interest(side, want);
    if (peer.broken) {
        event_active(peer.io, EV_WRITE, 0);
    } else if ((want & EV_READ) && (peer.carry || (peer.ssl && SSL_has_pending(peer.ssl)))) {
        event_active(peer.io, EV_READ, 0);
    }
}

// Makes <side>'s raw event wait for exactly <want>. Changing what an event
// waits for takes event_del() and event_assign(), which also drops an
// activation made by event_active(): raw_update_interest() redoes it.
void Session::raw_set_interest(Side side, short want) {
    Endpoint& peer = endpoint(side);
    if (want == peer.interest) return;
    event_del(peer.io);
    event_assign(peer.io, worker_.base(), peer.fd, static_cast<short>(want | EV_PERSIST),
                 side == Side::Client ? &Session::on_client_io : &Session::on_backend_io, this);
    if (want != 0) event_add(peer.io, nullptr);
    peer.interest = want;
}

void Session::raw_io(Side side, short what) {
    Endpoint& peer = endpoint(side);
    if (peer.broken) {
        tunnel_peer_closed(side, BEV_EVENT_ERROR);
        return;
    }
    // A TLS session may need the other direction's readiness to go on.
    const bool write_now = (what & EV_WRITE) || ((what & EV_READ) && peer.tls_write_wants_read);
    const bool read_now = (what & EV_READ) || ((what & EV_WRITE) && peer.tls_read_wants_write);
    if (write_now && !raw_write_pending(side)) return;
    if (read_now) raw_read(side);
}

// Writes what is pending for <side>. Returns false when the session may
// have ended or <side> was released (the caller must not touch either).
bool Session::raw_write_pending(Side side) {
    Endpoint& peer = endpoint(side);
    if (!peer.pending) return true;
    if (peer.ssl) {
        for (std::size_t left = evbuffer_get_length(peer.pending); left > 0;
             left = evbuffer_get_length(peer.pending)) {
            const std::size_t chunk = std::min(left, kMaxRawRead);
            const ssize_t written = raw_tls::write(peer.ssl, evbuffer_pullup(peer.pending, static_cast<ev_ssize_t>(chunk)),
                                                   chunk, peer.tls_write_wants_read);
            if (written < 0) {
                tunnel_peer_closed(side, BEV_EVENT_ERROR);
                return false;
            }
            if (written == 0) break;
            evbuffer_drain(peer.pending, static_cast<std::size_t>(written));
        }
    } else if (evbuffer_write_atmost(peer.pending, peer.fd, kMaxRawRead) < 0 && !would_block(errno)) {
        tunnel_peer_closed(side, BEV_EVENT_ERROR);
        return false;
    }
    const std::size_t left = evbuffer_get_length(peer.pending);
    if (left == 0) {
        evbuffer_free(peer.pending);
        peer.pending = nullptr;
        if (peer.flushing) {
            release(side);
            maybe_finish_closing();
            return false;
        }
    }
    // Also when bytes are left: a blocked TLS write may now wait for reading.
    raw_update_interest(side);
    // The other side was paused for this one's output: under the low
    // watermark, reading it resumes.
    Endpoint& source = endpoint(other(side));
    if (source.read_paused && left < generation_->config().limits.buffer_bytes / 2) {
        source.read_paused = false;
        raw_update_interest(other(side));
    }
    return true;
}

// Sends <length> bytes to <to>: straight to the socket when nothing is
// pending, else (and whatever the socket does not take) after the pending
// bytes. A failed write marks the endpoint broken; the reset is handled on
// the loop's next turn, not in the middle of whatever is writing.
void Session::raw_send(Side to, const std::uint8_t* data, std::size_t length) {
    Endpoint& peer = endpoint(to);
    if (peer.gone || peer.broken || length == 0) return;
    if (!peer.pending) {
        const ssize_t sent =
            peer.ssl ? raw_tls::write(peer.ssl, data, length, peer.tls_write_wants_read)
                     : send(peer.fd, data, length, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && (peer.ssl || !would_block(errno))) {
            peer.broken = true;
            event_active(peer.io, EV_WRITE, 0);
            return;
        }
        const std::size_t taken = sent > 0 ? static_cast<std::size_t>(sent) : 0;
        if (taken == length) return;
        data += taken;
        length -= taken;
        peer.pending = evbuffer_new();
        if (!peer.pending) {
            peer.broken = true;
            event_active(peer.io, EV_WRITE, 0);
            return;
        }
    }
    evbuffer_add(peer.pending, data, length);
    raw_update_interest(to);
}

// A run of data-frame bytes from <from>, for the other side.
void Session::raw_forward(Side from, const std::uint8_t* data, std::size_t length) {
    if (length == 0) return;
    Endpoint& dst = endpoint(other(from));
    if (from == Side::Client) record_.bytes_in += length;
    // A destination closed to data: frames were scanned (a close reply or a
    // pong must be seen) but their bytes are dropped.
    if (dst.gone || dst.close_sent) return;
    if (from == Side::Backend) record_.bytes_out += length;
    raw_send(other(from), data, length);
    if (dst.pending && evbuffer_get_length(dst.pending) >= generation_->config().limits.buffer_bytes) {
        endpoint(from).read_paused = true;
        raw_update_interest(from);
    }
}

void Session::raw_read(Side side) {
    Endpoint& src = endpoint(side);
    std::span<std::uint8_t> buffer = worker_.read_buffer();
    // What the handshake's buffers left can exceed half the read buffer:
    // then it is scanned alone, and the socket read on the next turn.
    if (src.carry && src.carry->size() > buffer.size() / 2) {
        const std::unique_ptr<std::string> carried = std::move(src.carry);
        if (raw_scan(side, reinterpret_cast<const std::uint8_t*>(carried->data()), carried->size())) {
            raw_update_interest(side);
        }
        return;
    }
    const std::size_t carried = src.carry ? src.carry->size() : 0;
    if (src.carry) {
        std::memcpy(buffer.data(), src.carry->data(), carried);
        src.carry.reset();
    }
    const std::size_t room = std::min({buffer.size() - carried, kMaxRawRead,
                                       static_cast<std::size_t>(generation_->config().limits.buffer_bytes)});
    short closed = 0;
    std::size_t got = 0;
    const bool tls_wanted_write = src.tls_read_wants_write;
    if (!src.read_done && !src.read_paused) {
        if (src.ssl) {
            closed = raw_tls::read(src.ssl, buffer.data() + carried, room, got, src.tls_read_wants_write);
        } else if (const ssize_t n = recv(src.fd, buffer.data() + carried, room, 0); n > 0) {
            got = static_cast<std::size_t>(n);
        } else if (n == 0) {
            closed = BEV_EVENT_EOF;
        } else if (!would_block(errno)) {
            closed = BEV_EVENT_ERROR;
        }
    }
    // A full TLS read may leave records in OpenSSL's buffer: read on next turn.
    const bool tls_more = src.ssl && got == room;
    if (carried + got > 0 && !raw_scan(side, buffer.data(), carried + got)) return;
    if (closed != 0) {
        tunnel_peer_closed(side, closed);
        return;
    }
    if (src.io && !src.gone) {
        if (tls_wanted_write != src.tls_read_wants_write) raw_update_interest(side);
        if (tls_more) event_active(src.io, EV_READ, 0);
    }
}

// Scans <length> bytes from <from> (the carry and a fresh read) and forwards
// them: consecutive data bytes as one run, control frames one by one. An
// incomplete frame header or control frame at the end becomes the carry.
// Returns false when the session left the tunnel (it may be freed: touch
// nothing).
bool Session::raw_scan(Side from, const std::uint8_t* data, std::size_t length) {
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
                raw_forward(from, data + run_start, pos - run_start);
                src.carry = std::make_unique<std::string>(reinterpret_cast<const char*>(data + pos), available);
                return true;
            case ws::Step::Kind::Forward:
                pos += step.bytes;
                count_forwarded(from, step, now);
                break;
            case ws::Step::Kind::ControlFrame:
                raw_forward(from, data + run_start, pos - run_start);
                if (from == Side::Client) record_.bytes_in += step.bytes;
                pos += step.bytes;
                run_start = pos;
                if (!handle_control_frame(from, data + pos - step.bytes, step.header)) return false;
                break;
            case ws::Step::Kind::Error:
                // The frames before the bad one were valid: they go through.
                raw_forward(from, data + run_start, pos - run_start);
                protocol_failure(from, step.close_code, step.reason);
                return false;
        }
        if (dst.ping_pending && flow.scanner.at_frame_boundary()) {
            raw_forward(from, data + run_start, pos - run_start);
            run_start = pos;
            send_ping(other(from));
        }
    }
    raw_forward(from, data + run_start, pos - run_start);
    return true;
}

// Frees what a raw endpoint holds, sends a TLS client its close_notify and
// closes the socket. The socket of an endpoint that never left its
// bufferevent (its <io> is null) is the bufferevent's to close.
void Session::raw_release(Endpoint& peer) {
    if (peer.ssl) {
        // close_notify, best effort: the socket is closed right after.
        if (!peer.broken) {
            ERR_clear_error();
            SSL_shutdown(peer.ssl);
        }
        SSL_free(peer.ssl);
        peer.ssl = nullptr;
    }
    if (peer.pending) {
        evbuffer_free(peer.pending);
        peer.pending = nullptr;
    }
    peer.carry.reset();
    if (!peer.io) return;
    event_free(peer.io);
    peer.io = nullptr;
    evutil_closesocket(peer.fd);
    peer.fd = -1;
    peer.interest = 0;
}

}  // namespace runtime
