#include "runtime/h2_connection.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "protocol/h2_mapping.h"
#include "protocol/http1.h"
#include "runtime/forward.h"
#include "runtime/session.h"
#include "runtime/worker.h"

namespace runtime {

namespace {

// nghttp2 output is produced while the socket's output holds less than
// this; the write callback asks for more at half of it.
constexpr std::size_t kOutputHigh = 64 * 1024;
// A back end's response head as the Session relays it: the head parser's
// limit plus one byte, to tell "too large".
constexpr std::size_t kMaxResponseHead = 64 * 1024 + 1;
// RFC 9113 §8.2.3 / RFC 7541 §4.1: each field counts its name, its value
// and 32 bytes against the header list size.
constexpr std::size_t kFieldOverhead = 32;
// Rapid reset (CVE-2023-44487): every request stream costs a Session and a
// back-end connection, so a client may reset at most this many streams in a
// burst and this many a second after it (nghttp2 answers GOAWAY
// ENHANCE_YOUR_CALM). Browsers reset a handful when a page is left.
constexpr std::uint64_t kResetBurst = 200;
constexpr std::uint64_t kResetRate = 50;

std::optional<std::uint64_t> parse_length(std::string_view text) {
    if (text.empty() || text.size() > 18) return std::nullopt;
    std::uint64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return value;
}

}  // namespace

struct H2Connection::Stream {
    H2Connection* conn = nullptr;
    std::int32_t id = 0;
    h2map::Request request;
    std::size_t header_bytes = 0;
    bool websocket = false;
    bool dispatched = false;      // a Session has it (or we answered it ourselves)
    bool request_ended = false;   // END_STREAM from the client
    bool head_request = false;
    std::string body;             // a request body of unknown length, buffered until END_STREAM
    // The pair end we hold; the Session holds the other. Null before
    // dispatch and for streams we answer ourselves.
    bufferevent* end = nullptr;
    evbuffer_cb_entry* drain_cb = nullptr;
    std::uint64_t unconsumed = 0;     // DATA bytes handed to the pair but not yet taken by the Session
    std::uint64_t to_consume = 0;     // taken: window to give back on the next flush
    std::unique_ptr<http1::ResponseParser> parser;
    bool response_started = false;
    forward::Framing framing = forward::Framing::None;
    std::uint64_t remaining = 0;  // Framing::Length: body bytes still due
    bool session_eof = false;     // the Session's side ended
    bool deferred = false;        // the data provider waits for bytes
    std::string own_body;         // an answer of ours (400, 413, 501 ...)
    std::size_t own_sent = 0;
    bool own_answer = false;
};

// The nghttp2 callbacks, as friends of H2Connection. nghttp2 calls them from
// inside nghttp2_session_mem_recv() / mem_send(): they record and queue, and
// never end the connection (that happens on the next wake).
struct H2Callbacks {
    static H2Connection::Stream* stream(nghttp2_session* session, std::int32_t id) {
        return static_cast<H2Connection::Stream*>(nghttp2_session_get_stream_user_data(session, id));
    }

    static int on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
        auto* c = static_cast<H2Connection*>(user);
        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
        auto s = std::make_unique<H2Connection::Stream>();
        s->conn = c;
        s->id = frame->hd.stream_id;
        nghttp2_session_set_stream_user_data(session, s->id, s.get());
        c->streams_[s->id] = std::move(s);
        c->worker_.metrics().h2_streams_opened.add();
        c->worker_.metrics().h2_streams_open.add();
        if (c->idle_ && !c->failing_) evtimer_del(c->idle_);
        return 0;
    }

    static int on_header(nghttp2_session* session, const nghttp2_frame* frame, const std::uint8_t* name,
                         std::size_t name_length, const std::uint8_t* value, std::size_t value_length, std::uint8_t,
                         void* user) {
        auto* c = static_cast<H2Connection*>(user);
        H2Connection::Stream* s = stream(session, frame->hd.stream_id);
        // Trailers and headers of streams we do not track are not used.
        if (s == nullptr || s->dispatched || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
        // HPACK bombs: a small block that decodes to a huge list is cut at
        // limits.max_header_bytes of decoded fields; the stream is reset.
        s->header_bytes += name_length + value_length + kFieldOverhead;
        if (s->header_bytes > c->generation_->config().limits.max_header_bytes) {
            c->worker_.metrics().h2_streams_refused.add();
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        s->request.add(std::string_view(reinterpret_cast<const char*>(name), name_length),
                       std::string_view(reinterpret_cast<const char*>(value), value_length));
        return 0;
    }

    static int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
        auto* c = static_cast<H2Connection*>(user);
        if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
        H2Connection::Stream* s = stream(session, frame->hd.stream_id);
        if (s == nullptr) return 0;
        const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->request_ended = end_stream;
            s->websocket = s->request.is_extended_connect();
            s->head_request = s->request.method == "HEAD";
            bool has_length = false;
            for (const h2map::Field& f : s->request.fields) has_length = has_length || f.name == "content-length";
            // A WebSocket, a request without a body and one whose length is
            // known go to a Session now; a body of unknown length is
            // buffered first (an HTTP/1.0 request needs its length).
            if (s->websocket || end_stream || has_length || s->request.method == "CONNECT") c->dispatch(*s);
            return 0;
        }
        if (!end_stream) return 0;
        s->request_ended = true;
        if (!s->dispatched) {
            c->dispatch(*s);
        } else if (s->websocket && s->end) {
            // END_STREAM is the client's FIN (RFC 8441 §4): the Session sees EOF.
            bufferevent_flush(s->end, EV_WRITE, BEV_FINISHED);
        }
        return 0;
    }

    static int on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t id, const std::uint8_t* data,
                             std::size_t length, void* user) {
        auto* c = static_cast<H2Connection*>(user);
        H2Connection::Stream* s = stream(session, id);
        if (s == nullptr) {
            nghttp2_session_consume(session, id, length);
            return 0;
        }
        c->deliver(*s, data, length);
        return 0;
    }

    static int on_stream_close(nghttp2_session*, std::int32_t id, std::uint32_t error_code, void* user) {
        static_cast<H2Connection*>(user)->stream_closed(id, error_code);
        return 0;
    }

    static ssize_t read_body(nghttp2_session*, std::int32_t, std::uint8_t* buffer, std::size_t length,
                             std::uint32_t* flags, nghttp2_data_source* source, void*) {
        auto* s = static_cast<H2Connection::Stream*>(source->ptr);
        if (s->own_answer) {
            const std::size_t n = std::min(length, s->own_body.size() - s->own_sent);
            std::memcpy(buffer, s->own_body.data() + s->own_sent, n);
            s->own_sent += n;
            if (s->own_sent == s->own_body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
            return static_cast<ssize_t>(n);
        }
        evbuffer* input = bufferevent_get_input(s->end);
        std::size_t available = evbuffer_get_length(input);
        if (s->framing == forward::Framing::Length) available = std::min<std::uint64_t>(available, s->remaining);
        const std::size_t n = std::min(length, available);
        if (n > 0) {
            evbuffer_remove(input, buffer, n);
            if (s->framing == forward::Framing::Length) s->remaining -= n;
        }
        const bool drained = evbuffer_get_length(input) == 0;
        if (s->framing == forward::Framing::Length && s->remaining == 0) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (s->session_eof && drained) {
            // A body cut short by the back end is reset, not ended cleanly.
            if (s->framing == forward::Framing::Length) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (n == 0) {
            s->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        return static_cast<ssize_t>(n);
    }

    // The Session took <n> bytes out of the pair: that much window may go back.
    static void on_pair_output(evbuffer*, const evbuffer_cb_info* info, void* arg) {
        auto* s = static_cast<H2Connection::Stream*>(arg);
        if (info->n_deleted == 0 || s->unconsumed == 0) return;
        const std::uint64_t n = std::min<std::uint64_t>(info->n_deleted, s->unconsumed);
        s->unconsumed -= n;
        s->to_consume += n;
        s->conn->schedule();
    }

    static void on_pair_read(bufferevent*, void* arg) {
        auto* s = static_cast<H2Connection::Stream*>(arg);
        s->conn->stream_readable(*s);
    }

    static void on_pair_event(bufferevent*, short what, void* arg) {
        auto* s = static_cast<H2Connection::Stream*>(arg);
        if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) s->conn->stream_ended_by_session(*s);
    }
};

H2Connection::H2Connection(Worker& worker, Session& host, bufferevent* bev, std::shared_ptr<const Generation> generation,
                           const config::Listener& listener, std::string peer_ip, std::string client_text, bool tls)
    : worker_(worker),
      host_(host),
      bev_(bev),
      generation_(std::move(generation)),
      listener_(listener),
      peer_ip_(std::move(peer_ip)),
      client_text_(std::move(client_text)),
      proto_(tls ? "h2" : "h2c") {}

H2Connection::~H2Connection() {
    for (auto& [id, s] : streams_) {
        if (s->end) {
            // The Session sees the client vanish.
            evbuffer_remove_cb_entry(bufferevent_get_output(s->end), s->drain_cb);
            bufferevent_flush(s->end, EV_WRITE, BEV_FINISHED);
            bufferevent_free(s->end);
            s->end = nullptr;
        }
    }
    worker_.metrics().h2_streams_open.sub(streams_.size());
    if (session_) nghttp2_session_del(session_);
    if (wake_) event_free(wake_);
    if (idle_) event_free(idle_);
    if (bev_) bufferevent_free(bev_);
    worker_.metrics().h2_connections_open.sub();
}

bool H2Connection::start() {
    worker_.metrics().h2_connections_open.add(1);
    worker_.metrics().h2_connections.add();
    const config::Limits& limits = generation_->config().limits;
    nghttp2_session_callbacks* callbacks = nullptr;
    if (nghttp2_session_callbacks_new(&callbacks) != 0) return false;
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, &H2Callbacks::on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &H2Callbacks::on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &H2Callbacks::on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &H2Callbacks::on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &H2Callbacks::on_stream_close);
    nghttp2_option* option = nullptr;
    if (nghttp2_option_new(&option) != 0) {
        nghttp2_session_callbacks_del(callbacks);
        return false;
    }
    // The window goes back only as the Session takes the bytes.
    nghttp2_option_set_no_auto_window_update(option, 1);
    // Attacks the HTTP/2 ecosystem has met, each with a bound:
    // SETTINGS and PING floods: at most this many ACKs queued, then GOAWAY.
    nghttp2_option_set_max_outbound_ack(option, 1000);
    nghttp2_option_set_max_settings(option, 32);
    // Rapid reset (CVE-2023-44487): a token bucket on RST_STREAM from the
    // client; an empty bucket ends the connection with GOAWAY.
    nghttp2_option_set_stream_reset_rate_limit(option, kResetBurst, kResetRate);
    // CONTINUATION floods (CVE-2024-27316 family).
    nghttp2_option_set_max_continuations(option, 8);
    // HPACK: our encoder's table stays small.
    nghttp2_option_set_max_deflate_dynamic_table_size(option, 4096);
    const int created = nghttp2_session_server_new2(&session_, callbacks, this, option);
    nghttp2_option_del(option);
    nghttp2_session_callbacks_del(callbacks);
    if (created != 0) return false;

    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, static_cast<std::uint32_t>(limits.h2_max_concurrent_streams)},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<std::uint32_t>(limits.h2_stream_window_bytes)},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(limits.max_header_bytes)},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings)) != 0) return false;
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                          static_cast<std::int32_t>(limits.h2_connection_window_bytes));

    wake_ = event_new(worker_.base(), -1, 0, &H2Connection::on_wake, this);
    idle_ = evtimer_new(worker_.base(), &H2Connection::on_idle, this);
    if (!wake_ || !idle_) return false;
    bufferevent_setcb(bev_, &H2Connection::on_read, &H2Connection::on_write, &H2Connection::on_event, this);
    bufferevent_setwatermark(bev_, EV_READ, 0, 0);
    bufferevent_setwatermark(bev_, EV_WRITE, kOutputHigh / 2, 0);
    bufferevent_enable(bev_, EV_READ | EV_WRITE);
    arm_idle();
    receive();
    schedule();
    return true;
}

void H2Connection::shut_down() {
    if (closing_ || !session_) return;
    closing_ = true;
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                          NGHTTP2_NO_ERROR, nullptr, 0);
    schedule();
}

// ---- Trampolines: error first, then read, then write --------------------------
// Each ends with the wake-up that may end the connection, never in between.

void H2Connection::on_event(bufferevent*, short what, void* self) {
    auto* c = static_cast<H2Connection*>(self);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) c->fail(what & BEV_EVENT_EOF ? "client closed" : "client error");
}

void H2Connection::on_read(bufferevent*, void* self) { static_cast<H2Connection*>(self)->receive(); }

void H2Connection::on_write(bufferevent*, void* self) { static_cast<H2Connection*>(self)->schedule(); }

void H2Connection::on_idle(evutil_socket_t, short, void* self) {
    auto* c = static_cast<H2Connection*>(self);
    if (c->failing_) {
        c->fail("GOAWAY not taken in time");
    } else if (c->streams_.empty()) {
        c->shut_down();
    }
}

void H2Connection::on_wake(evutil_socket_t, short, void* self) {
    auto* c = static_cast<H2Connection*>(self);
    if (!c->dead_) c->flush();
    const bool idle_out = evbuffer_get_length(bufferevent_get_output(c->bev_)) == 0;
    const bool done = (idle_out && !nghttp2_session_want_read(c->session_) && !nghttp2_session_want_write(c->session_)) ||
                      (idle_out && c->closing_ && c->streams_.empty());
    if (done && !c->closing_ && !c->failing_ && !c->dead_) {
        // nghttp2 ended the session itself (GOAWAY after an attack bound,
        // such as the reset rate limit): linger as after a receive error.
        c->worker_.log().log(obs::Level::Info, "h2 connection from {}: ended by nghttp2 (GOAWAY sent)", c->client_text_);
        c->worker_.metrics().h2_protocol_errors.add();
        c->failing_ = true;
        evtimer_del(c->idle_);
        timeval second{1, 0};
        evtimer_add(c->idle_, &second);
    }
    if (done && c->failing_ && !c->dead_) {
        // The GOAWAY is out: stop writing, keep draining until the timer.
        if (!c->listener_.tls) {
            const evutil_socket_t fd = bufferevent_getfd(c->bev_);
            if (fd >= 0) shutdown(fd, SHUT_WR);
        }
        return;
    }
    const bool finished = c->dead_ || done;
    if (finished && c->worker_.log().enabled(obs::Level::Debug)) {
        c->worker_.log().log(obs::Level::Debug, "h2 connection from {} ends: dead={} want_read={} want_write={} closing={} streams={}",
                             c->client_text_, c->dead_, nghttp2_session_want_read(c->session_),
                             nghttp2_session_want_write(c->session_), c->closing_, c->streams_.size());
    }
    if (finished) c->host_.h2_finished();  // deletes c
}

// ---- Connection I/O --------------------------------------------------------------

void H2Connection::schedule() {
    if (wake_) event_active(wake_, EV_TIMEOUT, 0);
}

void H2Connection::fail(const char* reason) {
    worker_.log().log(obs::Level::Debug, "h2 connection from {}: {}", client_text_, reason);
    dead_ = true;
    bufferevent_disable(bev_, EV_READ | EV_WRITE);
    schedule();
}

void H2Connection::arm_idle() {
    const config::Timeouts& timeouts = generation_->config().timeouts;
    const std::int64_t ms = timeouts.keepalive.count() > 0 ? timeouts.keepalive.count() : timeouts.handshake.count();
    timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    evtimer_add(idle_, &tv);
}

void H2Connection::receive() {
    if (dead_) return;
    evbuffer* input = bufferevent_get_input(bev_);
    if (failing_) {
        // Lingering: what the client still sends is read and dropped, so
        // that closing does not reset the connection and destroy our GOAWAY
        // before the client has read it (as RFC 9112 §9.6 for HTTP/1.1).
        evbuffer_drain(input, evbuffer_get_length(input));
        return;
    }
    while (evbuffer_get_length(input) > 0) {
        evbuffer_iovec chunk;
        if (evbuffer_peek(input, -1, nullptr, &chunk, 1) < 1) break;
        const ssize_t n = nghttp2_session_mem_recv(session_, static_cast<const std::uint8_t*>(chunk.iov_base), chunk.iov_len);
        if (n < 0) {
            // nghttp2 has queued its GOAWAY where the protocol allows one;
            // reading stops and the connection ends once it is out.
            worker_.log().log(obs::Level::Info, "h2 connection from {}: {}", client_text_, nghttp2_strerror(static_cast<int>(n)));
            worker_.metrics().h2_protocol_errors.add();
            evbuffer_drain(input, evbuffer_get_length(input));
            if (n == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
                dead_ = true;
            } else {
                // The GOAWAY gets a second to leave; a client that does not
                // read it (a flood) loses the connection then.
                failing_ = true;
                evtimer_del(idle_);
                timeval second{1, 0};
                evtimer_add(idle_, &second);
            }
            break;
        }
        evbuffer_drain(input, static_cast<std::size_t>(n));
    }
    schedule();
}

void H2Connection::flush() {
    for (auto& [id, s] : streams_) {
        if (s->to_consume > 0) {
            nghttp2_session_consume(session_, id, s->to_consume);
            s->to_consume = 0;
        }
    }
    evbuffer* output = bufferevent_get_output(bev_);
    while (evbuffer_get_length(output) < kOutputHigh) {
        const std::uint8_t* data = nullptr;
        const ssize_t n = nghttp2_session_mem_send(session_, &data);
        if (n < 0) {
            worker_.log().log(obs::Level::Info, "h2 connection from {}: {}", client_text_, nghttp2_strerror(static_cast<int>(n)));
            dead_ = true;
            return;
        }
        if (n == 0) break;
        bufferevent_write(bev_, data, static_cast<std::size_t>(n));
    }
}

// ---- Streams ---------------------------------------------------------------------

void H2Connection::deliver(Stream& s, const std::uint8_t* data, std::size_t length) {
    if (!s.dispatched) {
        // A body of unknown length, buffered until END_STREAM up to
        // limits.buffer_bytes (then 413). The window goes back at once:
        // what is held is bounded here.
        nghttp2_session_consume(session_, s.id, length);
        if (s.body.size() + length > generation_->config().limits.buffer_bytes) {
            s.dispatched = true;
            answer(s, 413, "request body too large without Content-Length\n");
            return;
        }
        s.body.append(reinterpret_cast<const char*>(data), length);
        return;
    }
    if (!s.end) {
        nghttp2_session_consume(session_, s.id, length);
        return;
    }
    s.unconsumed += length;
    bufferevent_write(s.end, data, length);
}

// The stream's request is complete enough for a Session: translated into
// an HTTP/1.1 head and written into a fresh bufferevent pair.
void H2Connection::dispatch(Stream& s) {
    s.dispatched = true;
    std::optional<std::uint64_t> body_length;
    if (!s.websocket) {
        for (const h2map::Field& f : s.request.fields) {
            if (f.name == "content-length") body_length = parse_length(f.value);
        }
        if (!body_length && !s.body.empty()) body_length = s.body.size();
    }
    const std::string key = h2map::websocket_key(worker_.rng()(), worker_.rng()());
    h2map::Translation t = h2map::to_http1(s.request, key, body_length);
    if (!t.ok) {
        worker_.log().log(obs::Level::Info, "h2 stream {} from {}: {}", s.id, client_text_, t.reason);
        worker_.metrics().h2_streams_refused.add();
        answer(s, t.status, std::string(t.reason) + "\n");
        return;
    }
    bufferevent* pair[2] = {nullptr, nullptr};
    if (bufferevent_pair_new(worker_.base(), 0, pair) != 0) {
        nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    s.end = pair[0];
    s.parser = std::make_unique<http1::ResponseParser>(http1::Limits{64 * 1024, 100, 8192});
    bufferevent_setcb(s.end, &H2Callbacks::on_pair_read, nullptr, &H2Callbacks::on_pair_event, &s);
    bufferevent_setwatermark(s.end, EV_READ, 0, generation_->config().limits.buffer_bytes);
    bufferevent_enable(s.end, EV_READ | EV_WRITE);
    s.drain_cb = evbuffer_add_cb(bufferevent_get_output(s.end), &H2Callbacks::on_pair_output, &s);
    bufferevent_write(s.end, t.head.data(), t.head.size());
    if (!s.body.empty()) {
        bufferevent_write(s.end, s.body.data(), s.body.size());
        std::string().swap(s.body);
    }
    if (s.request_ended && s.websocket) bufferevent_flush(s.end, EV_WRITE, BEV_FINISHED);
    worker_.start_h2_stream(pair[1], generation_, listener_, peer_ip_, client_text_, proto_);
}

// Our own answer on <s>: <status> with a short text body.
void H2Connection::answer(Stream& s, int status, const std::string& body) {
    s.own_answer = true;
    s.own_body = body;
    const std::string code = std::to_string(status);
    const std::string length = std::to_string(body.size());
    auto nv = [](const char* name, const std::string& value) {
        return nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(name)),
                          reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), std::strlen(name),
                          value.size(), NGHTTP2_NV_FLAG_NONE};
    };
    const std::string type = "text/plain";
    const nghttp2_nv headers[] = {nv(":status", code), nv("content-type", type), nv("content-length", length)};
    nghttp2_data_provider provider{};
    provider.source.ptr = &s;
    provider.read_callback = &H2Callbacks::read_body;
    nghttp2_submit_response(session_, s.id, headers, std::size(headers), &provider);
    schedule();
}

// The Session wrote into the pair: first its response head, then body or
// tunnel bytes for the data provider.
void H2Connection::stream_readable(Stream& s) {
    if (!s.end) return;
    evbuffer* input = bufferevent_get_input(s.end);
    while (!s.response_started) {
        const std::size_t length = std::min(evbuffer_get_length(input), kMaxResponseHead);
        if (length == 0) return;
        const char* data = reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ev_ssize_t>(length)));
        http1::ResponseHead head;
        const http1::Result result = s.parser->parse(std::string_view(data, length), head);
        if (result.status == http1::Status::NeedMore && length < kMaxResponseHead) return;
        if (result.status != http1::Status::Done) {
            nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
            schedule();
            return;
        }
        if (head.status < 200 && head.status != 101) {
            // An interim response (100 Continue) is not relayed.
            evbuffer_drain(input, result.consumed);
            s.parser = std::make_unique<http1::ResponseParser>(http1::Limits{64 * 1024, 100, 8192});
            continue;
        }
        const h2map::Response response = h2map::from_http1(head);
        forward::Body body = head.status == 101 ? forward::Body{forward::Framing::UntilClose, 0}
                                                : forward::response_body(s.head_request, head);
        if (body.framing == forward::Framing::Chunked) {
            // An HTTP/1.0 request never gets a chunked response from a Session.
            nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
            schedule();
            return;
        }
        const std::string status = std::to_string(response.status);
        std::vector<nghttp2_nv> nva;
        nva.reserve(response.fields.size() + 1);
        nva.push_back(nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(":status")),
                                 reinterpret_cast<std::uint8_t*>(const_cast<char*>(status.data())), 7, status.size(),
                                 NGHTTP2_NV_FLAG_NONE});
        for (const h2map::Field& f : response.fields) {
            nva.push_back(nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(f.name.data())),
                                     reinterpret_cast<std::uint8_t*>(const_cast<char*>(f.value.data())), f.name.size(),
                                     f.value.size(), NGHTTP2_NV_FLAG_NONE});
        }
        s.framing = body.framing;
        s.remaining = body.length;
        s.response_started = true;
        nghttp2_data_provider provider{};
        provider.source.ptr = &s;
        provider.read_callback = &H2Callbacks::read_body;
        const bool has_body = body.framing != forward::Framing::None &&
                              !(body.framing == forward::Framing::Length && body.length == 0);
        nghttp2_submit_response(session_, s.id, nva.data(), nva.size(), has_body ? &provider : nullptr);
        evbuffer_drain(input, result.consumed);
        if (!has_body) evbuffer_drain(input, evbuffer_get_length(input));
    }
    if (s.deferred) {
        s.deferred = false;
        nghttp2_session_resume_data(session_, s.id);
    }
    schedule();
}

// The Session is done with the stream (it finished, or released its client
// side): what it wrote is still relayed, then the stream ends.
void H2Connection::stream_ended_by_session(Stream& s) {
    s.session_eof = true;
    stream_readable(s);
    if (!s.response_started) {
        nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
    } else if (s.deferred) {
        s.deferred = false;
        nghttp2_session_resume_data(session_, s.id);
    }
    // The client may still send DATA nobody reads: it is consumed at once.
    if (s.unconsumed > 0) {
        s.to_consume += s.unconsumed;
        s.unconsumed = 0;
    }
    schedule();
}

void H2Connection::stream_closed(std::int32_t id, std::uint32_t) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = *it->second;
    if (s.end) {
        evbuffer_remove_cb_entry(bufferevent_get_output(s.end), s.drain_cb);
        // The Session sees its client go (a reset, or the end of a stream it
        // may still be writing to).
        bufferevent_flush(s.end, EV_WRITE, BEV_FINISHED);
        bufferevent_free(s.end);
        s.end = nullptr;
    }
    // Bytes the Session never took still count against the connection's window.
    if (s.unconsumed + s.to_consume > 0) nghttp2_session_consume_connection(session_, s.unconsumed + s.to_consume);
    streams_.erase(it);
    worker_.metrics().h2_streams_open.sub();
    if (streams_.empty() && !failing_) arm_idle();
    schedule();
}

}  // namespace runtime
