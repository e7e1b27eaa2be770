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
#include "runtime/h2_connection.h"
#include "runtime/session_internal.h"

namespace runtime {

using detail::kCloseLingerMs;
using detail::side_name;

const char* to_string(SessionState state) {
    switch (state) {
        case SessionState::ReadingProxyHeader: return "reading-proxy-header";
        case SessionState::ReadingRequest: return "reading-request";
        case SessionState::Http2: return "http2";
        case SessionState::AwaitingKeys: return "awaiting-keys";
        case SessionState::Connecting: return "connecting";
        case SessionState::AwaitingResponse: return "awaiting-response";
        case SessionState::ProxyingHttp: return "proxying-http";
        case SessionState::Refusing: return "refusing";
        case SessionState::Open: return "open";
        case SessionState::Closing: return "closing";
        case SessionState::Closed: return "closed";
    }
    return "?";
}

Session::Session(Worker& worker, std::shared_ptr<const Generation> generation)
    : worker_(worker),
      generation_(std::move(generation)),
      from_client_(ws::ScannerPolicy{}),
      from_backend_(ws::ScannerPolicy{}),
      handshake_(std::make_unique<Handshake>(generation_->config().limits.max_header_bytes)) {
    timer_ = evtimer_new(worker_.base(), &Session::on_timer, this);
}

Session::~Session() {
    if (timer_) event_free(timer_);
    if (proxy_event_) event_free(proxy_event_);
    if (proxy_fd_ >= 0) evutil_closesocket(proxy_fd_);
    if (client_.bev) bufferevent_free(client_.bev);
    if (backend_.bev) bufferevent_free(backend_.bev);
    release_backend_socket();
}

void Session::set_state(SessionState next) {
    if (worker_.log().enabled(obs::Level::Debug)) {
        worker_.log().log(obs::Level::Debug, "session {} {} -> {}", record_.request_id.empty() ? "-" : record_.request_id,
                          to_string(state_), to_string(next));
    }
    state_ = next;
}

void Session::arm_timer(std::int64_t delay_ms) {
    delay_ms = std::max<std::int64_t>(delay_ms, 0);
    timeval tv{static_cast<time_t>(delay_ms / 1000), static_cast<suseconds_t>((delay_ms % 1000) * 1000)};
    evtimer_add(timer_, &tv);
}

// ---- Trampolines: error first, then read, then write (STYLE.md) -------------

void Session::on_client_read(bufferevent*, void* self) {
    auto* s = static_cast<Session*>(self);
    s->client_spoke_ = true;
    switch (s->state_) {
        case SessionState::ReadingProxyHeader: s->read_proxy_header(); break;
        case SessionState::ReadingRequest: s->read_request(); break;
        case SessionState::ProxyingHttp: s->http_->on_client_read(); break;
        case SessionState::Refusing:
            evbuffer_drain(bufferevent_get_input(s->client_.bev), evbuffer_get_length(bufferevent_get_input(s->client_.bev)));
            break;
        default: break;
    }
}

void Session::on_client_write(bufferevent*, void* self) {
    auto* s = static_cast<Session*>(self);
    if (s->state_ == SessionState::ProxyingHttp) {
        s->http_->on_client_write();
        return;
    }
    if (s->state_ == SessionState::Refusing) {
        if (!s->handshake_->refusal_until_eof && s->handshake_->refusal_body_remaining == 0) s->lingering_close();
    }
}

void Session::on_client_event(bufferevent*, short what, void* self) {
    auto* s = static_cast<Session*>(self);
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
    switch (s->state_) {
        case SessionState::ProxyingHttp:
            s->http_->on_client_event(what);
            break;
        default:
            if (s->record_.reason.empty()) s->record_.reason = "client closed";
            if (s->record_.close_by.empty()) s->record_.close_by = "client";
            s->finish();
            break;
    }
}

void Session::on_backend_read(bufferevent*, void* self) {
    auto* s = static_cast<Session*>(self);
    switch (s->state_) {
        case SessionState::AwaitingResponse: s->read_response(); break;
        case SessionState::Refusing: s->relay_refusal_body(); break;
        default: break;
    }
}

void Session::on_backend_event(bufferevent*, short what, void* self) {
    auto* s = static_cast<Session*>(self);
    if (s->state_ == SessionState::Connecting) {
        if (what & BEV_EVENT_CONNECTED) {
            s->backend_connected();
        } else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
            const int error = EVUTIL_SOCKET_ERROR();
            std::string why = evutil_socket_error_to_string(error);
            if (SSL* ssl = bufferevent_openssl_get_ssl(s->backend_.bev)) why = "TLS: " + tls::last_error(ssl);
            s->connect_failed(why.c_str(), error);
        }
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
    switch (s->state_) {
        case SessionState::AwaitingResponse:
            s->release(Side::Backend);
            s->refuse(502, "backend closed before answering");
            break;
        case SessionState::Refusing:
            // A refusal body delimited by the back end closing is complete.
            s->release(Side::Backend);
            s->handshake_->refusal_until_eof = false;
            s->handshake_->refusal_body_remaining = 0;
            if (evbuffer_get_length(bufferevent_get_output(s->client_.bev)) == 0) s->lingering_close();
            break;
        default: break;
    }
}

void Session::on_timer(evutil_socket_t, short, void* self) {
    auto* s = static_cast<Session*>(self);
    switch (s->state_) {
        case SessionState::ReadingProxyHeader:
            s->record_.reason = "PROXY header timeout";
            s->record_.close_by = "proxy";
            s->finish();
            break;
        case SessionState::ReadingRequest:
            // A kept-alive connection with no new request ends silently.
            if (s->keepalive_wait_) {
                s->finish();
                break;
            }
            // Slowloris and silent clients: the head did not arrive in time.
            s->refuse(408, "request head timeout");
            break;
        case SessionState::AwaitingKeys:
            s->check_keys();
            break;
        case SessionState::ProxyingHttp:
            s->after_http();
            break;
        case SessionState::Http2: break;
        case SessionState::Connecting:
            s->connect_failed("connect timeout", ETIMEDOUT);
            break;
        case SessionState::AwaitingResponse:
            s->release(Side::Backend);
            s->refuse(504, "backend response timeout");
            break;
        case SessionState::Refusing:
            s->finish();
            break;
        case SessionState::Open:
            s->on_tunnel_timer();
            break;
        case SessionState::Closing:
            if (s->record_.reason.empty()) s->record_.reason = "close timeout";
            s->finish();
            break;
        case SessionState::Closed: break;
    }
}


// ---- Ending ------------------------------------------------------------------

void Session::shut_down() {
    switch (state_) {
        case SessionState::ProxyingHttp:
            http_->shut_down();
            break;
        case SessionState::Http2:
            h2_->shut_down();
            break;
        case SessionState::Open:
            send_close(Side::Client, ws::close_code::going_away, "shutdown");
            send_close(Side::Backend, ws::close_code::going_away, "shutdown");
            begin_closing("shutdown", "proxy", ws::close_code::going_away);
            break;
        case SessionState::Closing:
        case SessionState::Refusing:
        case SessionState::Closed:
            break;
        default:
            if (record_.reason.empty()) record_.reason = "shutdown";
            record_.close_by = "proxy";
            finish();
            break;
    }
}

const std::string* Session::backend_id() const {
    if (!pool_ || backend_index_ == chash::kNone) return nullptr;
    return &pool_->config->backends[backend_index_].id;
}

void Session::schedule_drain(std::int64_t at_ms, bool by_operator) {
    if (at_ms < drain_at_ms_) {
        drain_at_ms_ = at_ms;
        operator_drain_ = by_operator;
    }
    if (state_ == SessionState::Open) arm_timer(next_tunnel_deadline() - worker_.now_ms());
}

void Session::hand_off(std::int64_t at_ms) {
    if (state_ == SessionState::ProxyingHttp || (state_ == SessionState::ReadingRequest && keepalive_wait_)) {
        shut_down();
        return;
    }
    drain_code_ = ws::close_code::going_away;
    schedule_drain(at_ms);
}

void Session::cancel_operator_drain() {
    // The tunnel timer re-arms itself for the next deadline left when it fires.
    if (operator_drain_) drain_at_ms_ = INT64_MAX;
    operator_drain_ = false;
}

void Session::terminate() {
    if (record_.reason.empty()) record_.reason = "shutdown";
    if (record_.close_by.empty()) record_.close_by = "proxy";
    finish();
}

void Session::begin_closing(std::string_view reason, const char* close_by, int close_code) {
    if (state_ == SessionState::Open) {
        record_.reason = reason;
        record_.close_by = close_by;
        record_.close_code = close_code;
        set_state(SessionState::Closing);
        arm_timer(kCloseLingerMs);
    }
    maybe_finish_closing();
}

// The tunnel is over once each side has either gone or completed its close
// handshake; remaining connections are released after their output drains.
void Session::maybe_finish_closing() {
    if (state_ != SessionState::Closing) return;
    auto settled = [](const Endpoint& e) { return e.gone || (e.close_sent && e.close_received); };
    if (!settled(client_) || !settled(backend_)) return;
    if (!client_.gone && !client_.flushing) flush_and_release(Side::Client);
    if (!backend_.gone && !backend_.flushing) flush_and_release(Side::Backend);
    if (client_.gone && backend_.gone) finish();
}

void Session::flush_and_release(Side side) {
    Endpoint& peer = endpoint(side);
    if (peer.gone) return;
    if (output_length(side) == 0) {
        release(side);
        return;
    }
    peer.flushing = true;
    peer.read_done = true;
    update_reading(side);
}

void Session::release(Side side) {
    Endpoint& peer = endpoint(side);
    peer.gone = true;
    peer.flushing = false;
    peer.ping_pending = false;
    if (peer.bev) {
        // An HTTP/2 stream learns that its session is done.
        if (peer.h2) bufferevent_flush(peer.bev, EV_WRITE, BEV_FINISHED);
        bufferevent_free(peer.bev);
        peer.bev = nullptr;
    }
    peer.transport.reset();
    peer.carry.reset();
    if (side == Side::Backend) release_backend_socket();
}

void Session::h2_finished() { finish(); }

void Session::finish() {
    if (state_ == SessionState::Closed) return;
    set_state(SessionState::Closed);
    http_.reset();
    // An HTTP/2 connection logs nothing itself: its streams have their lines.
    const bool was_http2 = h2_ != nullptr;
    h2_.reset();
    // A TLS client's bytes may all have gone into a failed handshake: it spoke.
    if (SSL* ssl = client_.bev ? bufferevent_openssl_get_ssl(client_.bev) : nullptr) {
        if (BIO_number_read(SSL_get_rbio(ssl)) > 0) client_spoke_ = true;
    }
    release(Side::Client);
    release(Side::Backend);
    if (backend_state_) {
        backend_state_->active.fetch_sub(1, std::memory_order_relaxed);
        backend_state_.reset();
    }
    std::int64_t now = worker_.now_ms();
    record_.duration_ms = now - started_ms_;
    record_.time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    record_.messages_in = from_client_.messages;
    record_.messages_out = from_backend_.messages;
    // A kept-alive connection that ends between requests has nothing to log;
    // nor has a refusal over max_connections (counted in connections_refused,
    // like the plain listeners' 503 at accept, so an overload floods no log);
    // nor, unless log.empty_connections, a connection that sent nothing (a
    // port probe, a TCP health check: counted in empty_connections).
    const bool empty = !client_spoke_ && record_.bytes_in == 0 && record_.method.empty() && !keepalive_wait_;
    if (empty && !over_limit && !was_http2) worker_.metrics().empty_connections.add();
    if (!keepalive_wait_ && !over_limit && !was_http2 && (!empty || generation_->config().log.empty_connections)) {
        worker_.metrics().sessions_by_proto[record_.proto == "h2" ? 1 : record_.proto == "h2c" ? 2 : 0].add();
        worker_.write_access(record_, generation_->config());
        worker_.metrics().session_ended(obs::SessionKey{record_.pool, record_.backend, record_.status},
                                        record_.close_code, record_.close_by);
    }
    worker_.session_finished(this);  // deletes this
}

}  // namespace runtime
