// A tunnel's side on an HTTP/2 stream. runtime/h2_connection.cpp writes the
// stream's DATA into one end of a libevent bufferevent pair and sends what
// arrives at that end as DATA; this transport is the other end.
//
// Flow control is the pair's: while the tunnel does not read (backpressure)
// the pair stops moving bytes into our input, the connection's end keeps
// them, and the stream's receive window is not replenished
// (nghttp2_session_consume happens only as bytes leave that end). Towards the
// stream, bytes queue in our output while the connection's end is over its
// read watermark (limits.buffer_bytes), which is nghttp2's send window being
// used up: queued() grows and the tunnel stops reading the back end.
//
// The client's END_STREAM reaches us as the pair's EOF, after the bytes
// before it; releasing the transport ends the stream (the pair's EOF towards
// the connection, which sends END_STREAM behind the queued bytes).
#include "runtime/transport_stream.h"

#include <event2/buffer.h>
#include <event2/event.h>

namespace runtime {

namespace {

class StreamTransport final : public Transport {
public:
    StreamTransport(bufferevent* end, TransportUser& user, Side side) : end_(end), user_(user), side_(side) {}

    ~StreamTransport() override {
        bufferevent_flush(end_, EV_WRITE, BEV_FINISHED);
        bufferevent_free(end_);
    }

    void init(std::size_t low_mark) {
        bufferevent_setcb(end_, &StreamTransport::on_read, &StreamTransport::on_write, &StreamTransport::on_event,
                          this);
        bufferevent_setwatermark(end_, EV_READ, 0, 0);
        bufferevent_setwatermark(end_, EV_WRITE, low_mark, 0);
    }

    TransportRead read(std::span<std::uint8_t> into) override {
        TransportRead result;
        evbuffer* input = bufferevent_get_input(end_);
        const int n = evbuffer_remove(input, into.data(), into.size());
        if (n > 0) result.got = static_cast<std::size_t>(n);
        if (evbuffer_get_length(input) > 0) {
            wake_reader();
        } else if (eof_) {
            result.closed = TransportRead::kEof;
        }
        return result;
    }

    void send(const std::uint8_t* data, std::size_t length) override { bufferevent_write(end_, data, length); }

    std::size_t queued() const override { return evbuffer_get_length(bufferevent_get_output(end_)); }

    void set_reading(bool on) override {
        reading_ = on;
        if (on) {
            bufferevent_enable(end_, EV_READ);
            // An END_STREAM seen while paused raises no new event.
            if (eof_) wake_reader();
        } else {
            bufferevent_disable(end_, EV_READ);
        }
    }

    // Deferred to the next turn (the caller is in the middle of its own
    // work), and cancelled with the bufferevent if the session ends first.
    void wake_reader() override {
        woken_ = true;
        bufferevent_trigger(end_, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    }

private:
    static void on_read(bufferevent*, void* self) {
        auto* t = static_cast<StreamTransport*>(self);
        if (!t->reading_ && !t->woken_) return;
        t->woken_ = false;
        t->user_.transport_readable(t->side_);
    }

    static void on_write(bufferevent*, void* self) {
        auto* t = static_cast<StreamTransport*>(self);
        t->user_.transport_drained(t->side_);
    }

    static void on_event(bufferevent*, short what, void* self) {
        auto* t = static_cast<StreamTransport*>(self);
        if (what & BEV_EVENT_ERROR) {
            t->user_.transport_failed(t->side_);
        } else if (what & BEV_EVENT_EOF) {
            // Reported by read() once the bytes before it are taken.
            t->eof_ = true;
            t->user_.transport_readable(t->side_);
        }
    }

    bufferevent* end_;
    TransportUser& user_;
    Side side_;
    bool reading_ = false;
    bool woken_ = false;
    bool eof_ = false;  // the client's END_STREAM (the pair's EOF) arrived
};

}  // namespace

std::unique_ptr<Transport> make_stream_transport(bufferevent* end, TransportUser& user, Side side,
                                                 std::size_t low_mark) {
    auto transport = std::make_unique<StreamTransport>(end, user, side);
    transport->init(low_mark);
    return transport;
}

}  // namespace runtime
