// A tunnel's side on a socket, without a bufferevent: plain, or a TLS
// session taken over from the bufferevent that did its handshake
// (raw_tls::take_over in transport_tls.cpp).
//
// Reads go straight into the caller's buffer (the worker's shared read
// buffer), and sends go straight to the socket; the transport keeps only
// what the socket did not take at once (<pending_>). An idle side therefore
// holds no buffer at all, and a forwarded read costs one recv() and one
// send(): no FIONREAD ioctl before each read and no evbuffer bookkeeping,
// which is what a bufferevent costs.
//
// A TLS session is read with SSL_read() and OpenSSL's read-ahead on: one
// read() takes every record the socket holds. Records that OpenSSL has
// buffered raise no readiness event, so a TLS read goes on until SSL_read()
// wants the socket again, or the caller's buffer is full (then the
// transport wakes its reader again on the next turn). This spares the TLS
// path what bufferevent_openssl adds: a FIONREAD and two read() calls per
// record, and an epoll_ctl() pair per write to arm and disarm the write
// event (scenario t: 1.39 -> 1.06 us of CPU per message). An SSL_read()
// that must write first, or an SSL_write() that must read first (TLS 1.3
// KeyUpdate), waits for the other readiness.
#include "runtime/transport_socket.h"
#include "net/stream_socket.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include <event2/buffer.h>
#include <event2/event_struct.h>
#include <openssl/err.h>

#include "runtime/transport_tls.h"

namespace runtime {

namespace {

class SocketTransport final : public Transport {
public:
    SocketTransport(event_base* base, int fd, SSL* ssl, TransportUser& user, Side side, std::size_t max_io)
        : user_(user), ssl_(ssl), fd_(fd), max_io_(static_cast<std::uint32_t>(max_io)), side_(side) {
        // The event lives inside the transport: one allocation per side of a
        // tunnel, not two (an idle tunnel's memory is mostly these).
        event_assign(&io_, base, fd_, EV_PERSIST, &SocketTransport::on_io, this);
    }

    ~SocketTransport() override {
        if (ssl_) {
            // close_notify, best effort: the socket is closed right after.
            if (!broken_) {
                ERR_clear_error();
                SSL_shutdown(ssl_);
            }
            SSL_free(ssl_);
        }
        if (pending_) evbuffer_free(pending_);
        event_del(&io_);
        evutil_closesocket(fd_);
    }

    TransportRead read(std::span<std::uint8_t> into) override {
        TransportRead result;
        if (ssl_) {
            const bool wanted_write = tls_read_wants_write_;
            result.closed = raw_tls::read(ssl_, into.data(), into.size(), result.got, tls_read_wants_write_);
            if (wanted_write != tls_read_wants_write_) update_interest();
            // A full read may leave records in OpenSSL's buffer.
            if (result.closed == 0 && result.got == into.size()) wake_reader();
            return result;
        }
        const ssize_t n = recv(fd_, into.data(), into.size(), 0);
        if (n > 0) {
            result.got = static_cast<std::size_t>(n);
        } else if (n == 0) {
            result.closed = TransportRead::kEof;
        } else if (!net::would_block(errno)) {
            result.closed = TransportRead::kError;
        }
        return result;
    }

    void send(const std::uint8_t* data, std::size_t length) override {
        if (broken_ || length == 0) return;
        if (!pending_) {
            const ssize_t sent = ssl_ ? raw_tls::write(ssl_, data, length, tls_write_wants_read_)
                                      : ::send(fd_, data, length, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (sent < 0 && (ssl_ || !net::would_block(errno))) {
                fail_later();
                return;
            }
            const std::size_t taken = sent > 0 ? static_cast<std::size_t>(sent) : 0;
            if (taken == length) return;
            data += taken;
            length -= taken;
            pending_ = evbuffer_new();
            if (!pending_) {
                fail_later();
                return;
            }
        }
        evbuffer_add(pending_, data, length);
        update_interest();
    }

    std::size_t queued() const override { return pending_ ? evbuffer_get_length(pending_) : 0; }

    void set_reading(bool on) override {
        reading_ = on;
        update_interest();
    }

    void wake_reader() override {
        woken_ = true;
        event_active(&io_, EV_READ, 0);
    }

private:
    static void on_io(evutil_socket_t, short what, void* self) { static_cast<SocketTransport*>(self)->io(what); }

    void io(short what) {
        if (broken_) {
            user_.transport_failed(side_);
            return;
        }
        // A TLS session may need the other direction's readiness to go on.
        const bool write_now = (what & EV_WRITE) || ((what & EV_READ) && tls_write_wants_read_);
        const bool read_now = (what & EV_READ) || ((what & EV_WRITE) && tls_read_wants_write_);
        if (write_now && pending_) {
            if (!write_pending()) {
                user_.transport_failed(side_);
                return;
            }
            Survival alive(*this);
            user_.transport_drained(side_);
            if (!alive) return;
        }
        if (read_now && (reading_ || woken_)) {
            woken_ = false;
            user_.transport_readable(side_);
        }
    }

    // Writes what is pending. False when the connection failed.
    bool write_pending() {
        if (ssl_) {
            for (std::size_t left = queued(); left > 0; left = queued()) {
                const std::size_t chunk = std::min<std::size_t>(left, max_io_);
                const ssize_t written = raw_tls::write(
                    ssl_, evbuffer_pullup(pending_, static_cast<ev_ssize_t>(chunk)), chunk, tls_write_wants_read_);
                if (written < 0) {
                    broken_ = true;
                    return false;
                }
                if (written == 0) break;
                evbuffer_drain(pending_, static_cast<std::size_t>(written));
            }
        } else if (evbuffer_write_atmost(pending_, fd_, static_cast<ev_ssize_t>(max_io_)) < 0 && !net::would_block(errno)) {
            broken_ = true;
            return false;
        }
        if (queued() == 0) {
            evbuffer_free(pending_);
            pending_ = nullptr;
        }
        // Also when bytes are left: a blocked TLS write may now wait for reading.
        update_interest();
        return true;
    }

    // A write failed: reported on the loop's next turn, not from inside the
    // send() that found it.
    void fail_later() {
        broken_ = true;
        event_active(&io_, EV_WRITE, 0);
    }

    // Makes the event wait for what is needed now: reading while wanted,
    // writing while bytes are pending. Changing what an event waits for
    // takes event_del() and event_assign(), which also drops an activation
    // made by event_active(): it is made again.
    void update_interest() {
        short want = 0;
        if (reading_ || tls_write_wants_read_) want |= EV_READ;
        if (pending_ || tls_read_wants_write_) want |= EV_WRITE;
        if (want == interest_) return;
        event_base* base = event_get_base(&io_);
        event_del(&io_);
        event_assign(&io_, base, fd_, static_cast<short>(want | EV_PERSIST), &SocketTransport::on_io, this);
        if (want != 0) event_add(&io_, nullptr);
        interest_ = want;
        if (broken_) {
            event_active(&io_, EV_WRITE, 0);
        } else if (woken_ || (reading_ && ssl_ && SSL_has_pending(ssl_))) {
            event_active(&io_, EV_READ, 0);
        }
    }

    TransportUser& user_;
    SSL* ssl_;
    evbuffer* pending_ = nullptr;  // bytes the socket has not taken yet; null when none
    int fd_;
    std::uint32_t max_io_;         // largest write in one system call
    short interest_ = 0;           // what <io_> waits for (EV_READ, EV_WRITE)
    Side side_;
    bool reading_ = false;
    bool woken_ = false;           // wake_reader() was called: readable even if no byte arrives
    bool broken_ = false;          // a write failed; reported on the next turn
    bool tls_read_wants_write_ = false;  // SSL_read must be retried once the socket is writable
    bool tls_write_wants_read_ = false;  // SSL_write must be retried once the socket is readable
    event io_;
};

}  // namespace

std::unique_ptr<Transport> make_socket_transport(event_base* base, int fd, SSL* ssl, TransportUser& user, Side side,
                                                 std::size_t max_io) {
    return std::make_unique<SocketTransport>(base, fd, ssl, user, side, max_io);
}

}  // namespace runtime
