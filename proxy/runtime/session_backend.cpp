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

// How long a refused client may keep sending before its socket is closed;
// reading (and discarding) meanwhile avoids a TCP reset that would destroy
// the response before the client reads it.
constexpr std::int64_t kLingeringCloseMs = 1000;
// The most of a back end's response looked at for its head: the head
// parser's limit (64 KiB) plus one byte, to tell "too large".
constexpr std::size_t kMaxResponseHead = 64 * 1024 + 1;

void set_nodelay(bufferevent* bev) {
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool response_has_no_body(int status) { return status < 200 || status == 204 || status == 304; }

}  // namespace

void Session::try_connect() {
    // The sticky back end first, then the key's failover order, skipping
    // back ends this session already tried.
    Handshake& hs = *handshake_;
    std::size_t index = pick_backend(*pool_, hs.key_hash, hs.sticky_index,
                                     std::span<const std::size_t>(hs.tried.data(), hs.attempt), worker_.now_ms());
    if (index == chash::kNone) {
        refuse(no_backend_status(*pool_), hs.attempt == 0 ? "no backend available" : "backend unreachable");
        return;
    }
    hs.tried[hs.attempt] = index;
    backend_index_ = index;
    backend_state_ = pool_->states[index];
    backend_state_->active.fetch_add(1, std::memory_order_relaxed);
    const config::Backend& backend = pool_->config->backends[index];
    record_.backend = backend.address.text;

    // The socket is ours to open: a descriptor shortage here is this
    // proxy's, answered 503, and says nothing about the back end.
    const int fd = net::open_stream_socket(backend.address.storage.ss_family);
    if (fd < 0) {
        local_shortage(errno);
        return;
    }
    set_state(SessionState::Connecting);
    hs.connect_started_ms = worker_.now_ms();
    arm_timer(generation_->config().timeouts.connect.count());
    if (backend.tls && pool_->config->tls) {
        connect_tls(fd, backend);
    } else {
        connect_plain(fd, backend);
    }
}

void Session::connect_tls(int fd, const config::Backend& backend) {
    std::string ip = backend.address.text.substr(0, backend.address.text.rfind(':'));
    if (ip.size() > 2 && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
    backend_.bev = bufferevent_openssl_socket_new(worker_.base(), fd, pool_->config->tls->new_ssl(ip),
                                                  BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!backend_.bev) {
        evutil_closesocket(fd);
        refuse(502, "out of memory");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(backend_.bev, 1);
    backend_.plain = false;
    bufferevent_setcb(backend_.bev, &Session::on_backend_read, nullptr,
                      &Session::on_backend_event, this);
    // libevent reports a connect() that fails at once through the event
    // callback as well as the return value: only the first may act.
    const unsigned attempt = handshake_->attempt;
    if (bufferevent_socket_connect(backend_.bev, reinterpret_cast<const sockaddr*>(&backend.address.storage),
                                   static_cast<int>(backend.address.length)) < 0 &&
        handshake_->attempt == attempt && state_ == SessionState::Connecting) {
        const int error = EVUTIL_SOCKET_ERROR();
        connect_failed(evutil_socket_error_to_string(error), error);
    }
}

void Session::on_backend_io(evutil_socket_t, short, void* self) {
    auto* s = static_cast<Session*>(self);
    switch (s->state_) {
        case SessionState::Connecting: s->send_head_plain(); break;
        case SessionState::AwaitingResponse: s->read_response_plain(); break;
        default: break;
    }
}

// Makes the plain back end's handshake event wait for exactly <want>.
void Session::set_backend_interest(short want) {
    if (want == backend_.interest) return;
    event_del(backend_.io);
    event_assign(backend_.io, worker_.base(), backend_.fd, static_cast<short>(want | EV_PERSIST),
                 &Session::on_backend_io, this);
    if (want != 0) event_add(backend_.io, nullptr);
    backend_.interest = want;
}

// Closes the plain back end's socket of the handshake, if it has one.
void Session::release_backend_socket() {
    if (!backend_.io) return;
    event_free(backend_.io);
    backend_.io = nullptr;
    evutil_closesocket(backend_.fd);
    backend_.fd = -1;
    backend_.interest = 0;
}

// A plain back end is connected and handed the request head without a
// bufferevent. Over loopback and short links connect() has usually
// completed by the time it returns, so the head goes out at once and the
// handshake's only event on this socket is the response's arrival: no
// write event, no SO_ERROR query, no FIONREAD before each read.
void Session::connect_plain(int fd, const config::Backend& backend) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    backend_.plain = true;
    backend_.fd = fd;
    backend_.io = event_new(worker_.base(), fd, EV_PERSIST, &Session::on_backend_io, this);
    if (!backend_.io) {
        evutil_closesocket(fd);
        backend_.fd = -1;
        refuse(502, "out of memory");
        return;
    }
    handshake_->head_sent = 0;
    if (connect(fd, reinterpret_cast<const sockaddr*>(&backend.address.storage), backend.address.length) < 0 &&
        errno != EINPROGRESS) {
        const int error = errno;
        connect_failed(evutil_socket_error_to_string(error), error);
        return;
    }
    send_head_plain();
}

// Connecting to a plain back end: writes what of the request head the
// socket takes. While the connect is in flight the socket refuses with
// EAGAIN (then its writability is awaited); a connect that failed reports
// its error here.
void Session::send_head_plain() {
    Handshake& hs = *handshake_;
    while (hs.head_sent < hs.forwarded_head.size()) {
        const ssize_t sent = send(backend_.fd, hs.forwarded_head.data() + hs.head_sent,
                                  hs.forwarded_head.size() - hs.head_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent >= 0) {
            hs.head_sent += static_cast<std::size_t>(sent);
            continue;
        }
        const int error = errno;
        if (error == EINTR) continue;
        if (error == EAGAIN || error == EWOULDBLOCK) {
            set_backend_interest(EV_WRITE);
            return;
        }
        if (hs.head_sent == 0) {
            connect_failed(evutil_socket_error_to_string(error), error);
        } else {
            // Connected, then reset while taking the head.
            release(Side::Backend);
            refuse(502, "backend closed before answering");
        }
        return;
    }
    backend_connected();
}

// This proxy ran short of descriptors (or memory, or ports) while opening
// the back-end connection: the client gets 503, as from a proxy at
// capacity, and the back end's passive health is left alone.
void Session::local_shortage(int error) {
    const char* reason = worker_.backend_socket_shortage(error, record_.backend);
    drop_backend_connection();
    refuse(503, reason);
}

// Closes a back-end connection that never got to carry the session, so that
// another back end can be tried: the endpoint is not marked gone.
void Session::drop_backend_connection() {
    if (backend_.bev) {
        bufferevent_free(backend_.bev);
        backend_.bev = nullptr;
    }
    release_backend_socket();
}

void Session::connect_failed(const char* why, int error) {
    if (net::is_local_shortage(error)) {
        local_shortage(error);
        return;
    }
    worker_.log().log(obs::Level::Warn, "connect to {} failed: {}", record_.backend, why);
    // Passive health: enough consecutive failures take the back end out of
    // the hash for a cooldown; keys whose owner is up do not move.
    const config::HealthCheck& health = pool_->config->health;
    if (backend_state_->connect_failures.fetch_add(1, std::memory_order_relaxed) + 1 >= health.fall) {
        std::int64_t now = worker_.now_ms();
        if (backend_state_->down_until_ms.exchange(now + health.cooldown.count(), std::memory_order_relaxed) <= now)
            worker_.log().log(obs::Level::Warn, "backend {} down for {} ms after {} consecutive connect failures",
                          record_.backend, health.cooldown.count(), health.fall);
    }
    backend_state_->active.fetch_sub(1, std::memory_order_relaxed);
    backend_state_.reset();
    drop_backend_connection();
    if (++handshake_->attempt < handshake_->tried.size()) {
        try_connect();
    } else {
        refuse(502, "backend unreachable");
    }
}

// The client's socket needs no TCP_NODELAY of its own: accepted sockets
// inherit it from the listener (Worker::bind_one).
void Session::backend_connected() {
    backend_state_->connect_failures.store(0, std::memory_order_relaxed);
    record_.connect_ms = worker_.now_ms() - handshake_->connect_started_ms;
    if (backend_.bev) {
        set_nodelay(backend_.bev);
        bufferevent_write(backend_.bev, handshake_->forwarded_head.data(), handshake_->forwarded_head.size());
        bufferevent_setwatermark(backend_.bev, EV_READ, 0, kMaxResponseHead);
        bufferevent_enable(backend_.bev, EV_READ);
    } else {
        set_backend_interest(EV_READ);
    }
    std::string().swap(handshake_->forwarded_head);
    set_state(SessionState::AwaitingResponse);
    arm_timer(generation_->config().timeouts.handshake.count());
}

// The back end's response head, from its bufferevent (a TLS back end).
void Session::read_response() {
    evbuffer* input = bufferevent_get_input(backend_.bev);
    std::size_t length = std::min<std::size_t>(evbuffer_get_length(input), kMaxResponseHead);
    const char* data = reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ev_ssize_t>(length)));
    std::size_t head_bytes = 0;
    bool deflate = false;
    const BackendAnswer answer = take_response(std::string_view(data, length), head_bytes, deflate);
    if (answer == BackendAnswer::NeedMore || answer == BackendAnswer::Invalid) return;
    evbuffer_remove_buffer(input, bufferevent_get_output(client_.bev), head_bytes);
    if (answer == BackendAnswer::Upgrade) {
        open_tunnel(deflate);
    } else {
        start_refusal_relay();
    }
}

// The back end's response head, read straight from a plain back end's
// socket into the worker's read buffer. A head that arrives whole (the
// common case) is parsed in place; a partial one is kept until it is
// complete. Bytes behind the head (frames sent with the 101, or the start of
// a refusal's body) become the endpoint's carry.
void Session::read_response_plain() {
    Handshake& hs = *handshake_;
    std::span<std::uint8_t> buffer = worker_.read_buffer();
    const ssize_t got = recv(backend_.fd, buffer.data(), std::min(buffer.size(), kMaxResponseHead), 0);
    if (got < 0 && net::would_block(errno)) return;
    if (got <= 0) {
        release(Side::Backend);
        refuse(502, "backend closed before answering");
        return;
    }
    std::string_view bytes(reinterpret_cast<const char*>(buffer.data()), static_cast<std::size_t>(got));
    if (!hs.response_bytes.empty()) {
        hs.response_bytes.append(bytes);
        bytes = hs.response_bytes;
    }
    std::size_t head_bytes = 0;
    bool deflate = false;
    const BackendAnswer answer = take_response(bytes.substr(0, kMaxResponseHead), head_bytes, deflate);
    if (answer == BackendAnswer::NeedMore) {
        if (hs.response_bytes.empty()) hs.response_bytes.assign(bytes);
        return;
    }
    if (answer == BackendAnswer::Invalid) return;
    if (bytes.size() > head_bytes) backend_.carry = std::make_unique<std::string>(bytes.substr(head_bytes));
    if (answer == BackendAnswer::Upgrade) {
        // A socket client gets the 101 from its transport, straight from
        // this buffer; an HTTP/2 stream's goes through its pair, to become
        // the stream's HEADERS.
        if (client_.h2) {
            bufferevent_write(client_.bev, bytes.data(), head_bytes);
            open_tunnel(deflate);
        } else {
            open_tunnel(deflate, bytes.substr(0, head_bytes));
        }
        return;
    }
    bufferevent_write(client_.bev, bytes.data(), head_bytes);
    if (!adopt_backend_bufferevent()) {
        release(Side::Backend);
        record_.reason = "out of memory";
        finish();
        return;
    }
    start_refusal_relay();
}

// Parses the back end's response head at the front of <bytes>, then checks
// and records it; <head_bytes> is its length. NeedMore: the head is not
// complete. Upgrade: a valid 101 (<deflate> says whether permessage-deflate
// was agreed). Refusal: any other status, the back end's to give, relayed
// verbatim. Invalid: not HTTP, or a 101 that does not match the request;
// the back end is released and the client is being answered 502.
Session::BackendAnswer Session::take_response(std::string_view bytes, std::size_t& head_bytes, bool& deflate) {
    http1::ResponseHead response;
    const http1::Result result = handshake_->response_parser.parse(bytes, response);
    if (result.status == http1::Status::NeedMore) return BackendAnswer::NeedMore;
    if (result.status == http1::Status::Error) {
        worker_.log().log(obs::Level::Warn, "bad response head from {}: {}", record_.backend, result.reason);
        release(Side::Backend);
        refuse(502, "invalid response from backend");
        return BackendAnswer::Invalid;
    }
    head_bytes = result.consumed;
    if (response.status == 101) {
        ws::ResponseCheck check = ws::check_upgrade_response(response, handshake_->client_key);
        if (!check.ok) {
            worker_.log().log(obs::Level::Warn, "backend {} refused the upgrade badly: {}", record_.backend, check.reason);
            release(Side::Backend);
            refuse(502, check.reason);
            return BackendAnswer::Invalid;
        }
        record_.status = 101;
        record_.bytes_out += head_bytes;
        deflate = check.deflate_negotiated;
        return BackendAnswer::Upgrade;
    }
    record_.status = response.status;
    record_.reason = "backend refused upgrade";
    record_.close_by = "backend";
    record_.bytes_out += head_bytes;
    if (response_has_no_body(response.status)) {
        handshake_->refusal_body_remaining = 0;
    } else if (response.content_length) {
        handshake_->refusal_body_remaining = *response.content_length;
    } else {
        handshake_->refusal_until_eof = true;
    }
    return BackendAnswer::Refusal;
}

// The refusal's head is on its way to the client: its body follows.
void Session::start_refusal_relay() {
    bufferevent_setwatermark(backend_.bev, EV_READ, 0, generation_->config().limits.buffer_bytes);
    set_state(SessionState::Refusing);
    arm_timer(generation_->config().timeouts.handshake.count());
    relay_refusal_body();
}

// A plain back end, connected and read without a bufferevent, moves into
// one for a refusal relayed to the client. Bytes already read past the head
// (the carry) go into its input first. False when out of memory (the
// socket is then closed).
bool Session::adopt_backend_bufferevent() {
    const int fd = backend_.fd;
    event_free(backend_.io);
    backend_.io = nullptr;
    backend_.interest = 0;
    backend_.fd = -1;
    backend_.bev = bufferevent_socket_new(worker_.base(), fd, BEV_OPT_CLOSE_ON_FREE);
    if (!backend_.bev) {
        evutil_closesocket(fd);
        backend_.carry.reset();
        return false;
    }
    bufferevent_setcb(backend_.bev, &Session::on_backend_read, nullptr,
                      &Session::on_backend_event, this);
    if (backend_.carry) {
        // A socket bufferevent freezes the end of its input for everyone
        // but its own reads: thawed for this one append.
        evbuffer* input = bufferevent_get_input(backend_.bev);
        evbuffer_unfreeze(input, 0);
        const int added = evbuffer_add(input, backend_.carry->data(), backend_.carry->size());
        evbuffer_freeze(input, 0);
        backend_.carry.reset();
        if (added != 0) return false;
    }
    bufferevent_enable(backend_.bev, EV_READ);
    return true;
}

void Session::relay_refusal_body() {
    if (backend_.bev && !backend_.gone) {
        evbuffer* input = bufferevent_get_input(backend_.bev);
        std::size_t length = evbuffer_get_length(input);
        if (!handshake_->refusal_until_eof) length = std::min<std::uint64_t>(length, handshake_->refusal_body_remaining);
        if (length > 0) {
            evbuffer_remove_buffer(input, bufferevent_get_output(client_.bev), length);
            record_.bytes_out += length;
            if (!handshake_->refusal_until_eof) handshake_->refusal_body_remaining -= length;
        }
        if (handshake_->refusal_until_eof || handshake_->refusal_body_remaining > 0) return;
        release(Side::Backend);
    }
    if (evbuffer_get_length(bufferevent_get_output(client_.bev)) == 0) lingering_close();
}

void Session::refuse(int status, std::string_view reason, std::string_view extra_headers) {
    if (record_.status == 0) record_.status = status;
    if (record_.reason.empty()) record_.reason = reason;
    if (record_.close_by.empty()) record_.close_by = "proxy";
    if (backend_state_) {
        backend_state_->active.fetch_sub(1, std::memory_order_relaxed);
        backend_state_.reset();
    }
    if (backend_.bev || backend_.io) release(Side::Backend);
    std::string response = forward::error_response(status, reason, extra_headers);
    record_.bytes_out += response.size();
    bufferevent_write(client_.bev, response.data(), response.size());
    bufferevent_enable(client_.bev, EV_READ);
    bufferevent_setwatermark(client_.bev, EV_READ, 0, 0);
    set_state(SessionState::Refusing);
    arm_timer(generation_->config().timeouts.handshake.count());
}

// The response is on its way: stop writing, keep reading (and discarding)
// for a moment so that unread request bytes do not turn our close into a
// reset that destroys the response (RFC 9112 §9.6).
void Session::lingering_close() {
    // An HTTP/2 stream has no socket to linger on: its end is the stream's.
    if (client_.h2) {
        finish();
        return;
    }
    if (handshake_->lingering) return;
    handshake_->lingering = true;
    evutil_socket_t fd = bufferevent_getfd(client_.bev);
    // A TLS connection cannot be half-closed under OpenSSL's feet.
    if (fd >= 0 && !listener_->tls) shutdown(fd, SHUT_WR);
    bufferevent_enable(client_.bev, EV_READ);
    arm_timer(kLingeringCloseMs);
}

}  // namespace runtime
