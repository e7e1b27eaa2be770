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
#include "protocol/cookie.h"
#include "runtime/forward.h"
#include "runtime/token_check.h"
#include "runtime/worker.h"

namespace runtime {

namespace {

// How long a tunnel waits for the close handshake to complete after the
// first close frame before it drops both connections (issue: "or 5 s after
// the first close frame").
constexpr std::int64_t kCloseLingerMs = 5000;
// How long a refused client may keep sending before its socket is closed;
// reading (and discarding) meanwhile avoids a TCP reset that would destroy
// the response before the client reads it.
constexpr std::int64_t kLingeringCloseMs = 1000;
// Largest read or write a tunnel does in one system call.
constexpr std::size_t kMaxSingleIo = 128 * 1024;
// The most of a back end's response looked at for its head: the head
// parser's limit (64 KiB) plus one byte, to tell "too large".
constexpr std::size_t kMaxResponseHead = 64 * 1024 + 1;

std::string address_ip(const sockaddr* address) {
    char text[INET6_ADDRSTRLEN] = {};
    if (address->sa_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, text, sizeof text);
    } else if (address->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, text, sizeof text);
    }
    return text;
}

std::uint16_t address_port(const sockaddr* address) {
    if (address->sa_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(address)->sin_port);
    if (address->sa_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(address)->sin6_port);
    return 0;
}

void set_nodelay(bufferevent* bev) {
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool response_has_no_body(int status) { return status < 200 || status == 204 || status == 304; }

const char* side_name(Side side) { return side == Side::Client ? "client" : "backend"; }

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

const char* to_string(SessionState state) {
    switch (state) {
        case SessionState::ReadingProxyHeader: return "reading-proxy-header";
        case SessionState::ReadingRequest: return "reading-request";
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
    raw_release(client_);
    raw_release(backend_);
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
    switch (s->state_) {
        case SessionState::ReadingProxyHeader: s->read_proxy_header(); break;
        case SessionState::ReadingRequest: s->read_request(); break;
        case SessionState::ProxyingHttp: s->http_->on_client_read(); break;
        case SessionState::Open:
        case SessionState::Closing: s->pump(Side::Client); break;
        case SessionState::Refusing:
            evbuffer_drain(bufferevent_get_input(s->client_.bev), evbuffer_get_length(bufferevent_get_input(s->client_.bev)));
            break;
        default: break;
    }
}

void Session::on_client_write(bufferevent*, void* self) {
    auto* s = static_cast<Session*>(self);
    if (s->client_.flushing) {
        s->release(Side::Client);
        s->maybe_finish_closing();
        return;
    }
    if (s->state_ == SessionState::ProxyingHttp) {
        s->http_->on_client_write();
        return;
    }
    if (s->state_ == SessionState::Refusing) {
        if (!s->handshake_->refusal_until_eof && s->handshake_->refusal_body_remaining == 0) s->lingering_close();
        return;
    }
    // The client drained below the low watermark: resume reading the back end.
    if (s->state_ == SessionState::Open || s->state_ == SessionState::Closing) {
        if (s->backend_.bev && !s->backend_.gone) bufferevent_enable(s->backend_.bev, EV_READ);
        s->pump(Side::Backend);
    }
}

void Session::on_client_event(bufferevent*, short what, void* self) {
    auto* s = static_cast<Session*>(self);
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) return;
    switch (s->state_) {
        case SessionState::ProxyingHttp:
            s->http_->on_client_event(what);
            break;
        case SessionState::Open:
        case SessionState::Closing:
            s->tunnel_peer_closed(Side::Client, what);
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
        case SessionState::Open:
        case SessionState::Closing: s->pump(Side::Backend); break;
        default: break;
    }
}

void Session::on_backend_write(bufferevent*, void* self) {
    auto* s = static_cast<Session*>(self);
    if (s->backend_.flushing) {
        s->release(Side::Backend);
        s->maybe_finish_closing();
        return;
    }
    if (s->state_ == SessionState::Open || s->state_ == SessionState::Closing) {
        if (s->client_.bev && !s->client_.gone) bufferevent_enable(s->client_.bev, EV_READ);
        s->pump(Side::Client);
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
        case SessionState::Open:
        case SessionState::Closing:
            s->tunnel_peer_closed(Side::Backend, what);
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

// ---- Handshake ---------------------------------------------------------------

void Session::start(int fd, const sockaddr* address, socklen_t, const config::Listener& listener) {
    started_ms_ = worker_.now_ms();
    clock_gettime(CLOCK_MONOTONIC, &handshake_->accepted_at);
    listener_ = &listener;
    handshake_->peer_ip = client_ip_ = address_ip(address);
    record_.client = address->sa_family == AF_INET6 ? "[" + client_ip_ + "]:" + std::to_string(address_port(address))
                                                    : client_ip_ + ":" + std::to_string(address_port(address));
    // One deadline for the PROXY header, the TLS handshake and the request head.
    arm_timer(generation_->config().timeouts.handshake.count());
    if (listener.proxy_protocol && listener.tls) {
        // The balancer's header comes in cleartext before the ClientHello:
        // no TLS bufferevent until it has been taken off the socket.
        proxy_event_ = event_new(worker_.base(), fd, EV_READ | EV_PERSIST, &Session::on_proxy_readable, this);
        if (!proxy_event_) {
            evutil_closesocket(fd);
            record_.reason = "out of memory";
            finish();
            return;
        }
        proxy_fd_ = fd;
        event_add(proxy_event_, nullptr);
        set_state(SessionState::ReadingProxyHeader);
        return;
    }
    if (!attach_client(fd)) return;
    if (listener.proxy_protocol) {
        set_state(SessionState::ReadingProxyHeader);
    } else {
        admit_client();
    }
}

// Wraps the accepted <fd> in the client's bufferevent: TLS on a TLS listener
// (the server handshake starts with the first byte read), plain otherwise.
// False when that failed; the session is then finished (and freed).
bool Session::attach_client(int fd) {
    if (listener_->tls) {
        client_.bev = bufferevent_openssl_socket_new(worker_.base(), fd, listener_->tls->new_ssl(),
                                                     BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
        // A client that closes TCP without close_notify has still closed.
        if (client_.bev) bufferevent_openssl_set_allow_dirty_shutdown(client_.bev, 1);
    } else {
        client_.bev = bufferevent_socket_new(worker_.base(), fd, BEV_OPT_CLOSE_ON_FREE);
        client_.plain = true;
    }
    if (!client_.bev) {
        evutil_closesocket(fd);
        record_.reason = "out of memory";
        finish();
        return false;
    }
    bufferevent_setcb(client_.bev, &Session::on_client_read, &Session::on_client_write, &Session::on_client_event, this);
    // Never buffer more than one head (plus one byte, to detect "too large").
    bufferevent_setwatermark(client_.bev, EV_READ, 0, generation_->config().limits.max_header_bytes + 1);
    bufferevent_enable(client_.bev, EV_READ);
    return true;
}

// limits.max_connections_per_ip, counted on the client address as known at
// this point: the PROXY header's source on proxy_protocol listeners. The 429
// goes through the client's bufferevent, so TLS clients can read it; so does
// the 503 of a connection accepted over server.max_connections.
void Session::admit_client() {
    if (over_limit) {
        refuse(503, "too many connections");
        return;
    }
    if (generation_->config().limits.max_connections_per_ip == 0) return;
    if (worker_.acquire_per_ip(client_ip_)) {
        per_ip_key = client_ip_;
    } else {
        worker_.metrics().connections_refused.add();
        refuse(429, "too many connections from this address");
    }
}

// A connection that does not start with a valid PROXY header is closed
// without an answer: it is not talking to us in HTTP (or TLS) yet.
void Session::reject_proxy_header(std::string_view error) {
    worker_.log().log(obs::Level::Info, "connection from {}: bad PROXY header: {}", record_.client, error);
    record_.reason = "bad PROXY header";
    record_.close_by = "proxy";
    finish();
}

// PROXY protocol v1/v2 from an L4 balancer: the real client address comes
// first; a connection that does not start with a valid header is closed
// without an HTTP answer (it is not talking to us in HTTP yet).
void Session::read_proxy_header() {
    evbuffer* input = bufferevent_get_input(client_.bev);
    std::size_t length = evbuffer_get_length(input);
    const auto* data = evbuffer_pullup(input, static_cast<ev_ssize_t>(length));
    proxyproto::Result result = proxyproto::parse(std::span<const std::uint8_t>(data, length));
    if (result.status == proxyproto::Status::NeedMore) return;
    if (result.status == proxyproto::Status::Error) {
        reject_proxy_header(result.error);
        return;
    }
    use_proxy_source(result);
    evbuffer_drain(input, result.consumed);
    record_.bytes_in += result.consumed;
    set_state(SessionState::ReadingRequest);
    admit_client();
    if (state_ == SessionState::ReadingRequest && evbuffer_get_length(input) > 0) read_request();
}

void Session::on_proxy_readable(evutil_socket_t, short, void* self) {
    static_cast<Session*>(self)->read_proxy_header_before_tls();
}

// PROXY protocol on a TLS listener (AWS NLB, HAProxy in TCP mode): the header
// is taken straight off the socket, never a byte past its end, so that the TLS
// handshake then starts at the ClientHello's first byte. MSG_PEEK shows what
// has arrived and only bytes the parser places inside the header are
// consumed; all peeked bytes of an incomplete header are, so the
// level-triggered read event cannot spin on bytes left in the socket. A v2
// header longer than limits.max_header_bytes is refused at once.
void Session::read_proxy_header_before_tls() {
    std::uint8_t chunk[512];
    for (;;) {
        ssize_t peeked = recv(proxy_fd_, chunk, sizeof chunk, MSG_PEEK);
        if (peeked < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (peeked <= 0) {
            record_.reason = "client closed";
            record_.close_by = "client";
            finish();
            return;
        }
        const std::size_t before = handshake_->proxy_head.size();
        handshake_->proxy_head.append(reinterpret_cast<const char*>(chunk), static_cast<std::size_t>(peeked));
        proxyproto::Result result =
            proxyproto::parse(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(handshake_->proxy_head.data()),
                                                            handshake_->proxy_head.size()),
                              generation_->config().limits.max_header_bytes);
        if (result.status == proxyproto::Status::Error) {
            reject_proxy_header(result.error);
            return;
        }
        // NeedMore: every byte so far belongs to the header. Done: the header
        // ends inside this chunk (an earlier chunk was an incomplete prefix).
        const std::size_t take =
            result.status == proxyproto::Status::Done ? result.consumed - before : static_cast<std::size_t>(peeked);
        if (recv(proxy_fd_, chunk, take, 0) != static_cast<ssize_t>(take)) {
            record_.reason = "client closed";
            record_.close_by = "client";
            finish();
            return;
        }
        record_.bytes_in += take;
        if (result.status == proxyproto::Status::NeedMore) continue;

        use_proxy_source(result);
        event_free(proxy_event_);
        proxy_event_ = nullptr;
        const int fd = proxy_fd_;
        proxy_fd_ = -1;
        std::string().swap(handshake_->proxy_head);
        if (!attach_client(fd)) return;
        set_state(SessionState::ReadingRequest);
        admit_client();
        return;
    }
}

// The client as the PROXY header names it; v1 UNKNOWN and v2 LOCAL keep the
// TCP peer.
void Session::use_proxy_source(const proxyproto::Result& result) {
    if (result.local) return;
    handshake_->peer_ip = client_ip_ = result.source_text;
    record_.client = (result.source.ss_family == AF_INET6 ? "[" + client_ip_ + "]" : client_ip_) + ":" +
                     std::to_string(result.source_port);
}

void Session::read_request() {
    evbuffer* input = bufferevent_get_input(client_.bev);
    if (keepalive_wait_) {
        // The next request on a kept-alive connection starts: its head gets
        // the handshake timeout, its log line its own clock.
        if (evbuffer_get_length(input) == 0) return;
        keepalive_wait_ = false;
        started_ms_ = worker_.now_ms();
        clock_gettime(CLOCK_MONOTONIC, &handshake_->accepted_at);
        arm_timer(generation_->config().timeouts.handshake.count());
    }
    std::size_t length = std::min<std::size_t>(evbuffer_get_length(input),
                                               generation_->config().limits.max_header_bytes + 1);
    const char* data = reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ev_ssize_t>(length)));
    http1::RequestHead request;
    http1::Result result = handshake_->request_parser.parse(std::string_view(data, length), request);
    switch (result.status) {
        case http1::Status::NeedMore: return;
        case http1::Status::Error:
            record_.bytes_in += length;
            refuse(result.http_status, result.reason);
            return;
        case http1::Status::Done:
            record_.bytes_in += result.consumed;
            handle_request(request, result.consumed);
            return;
    }
}

void Session::handle_request(const http1::RequestHead& request, std::size_t head_bytes) {
    const config::Config& config = generation_->config();
    record_.method = request.method;
    record_.path = request.path;
    if (const http1::Header* host = request.find("host")) record_.host = host->value;
    if (const http1::Header* id = request.find("x-request-id"); id && forward::acceptable_request_id(id->value)) {
        record_.request_id = id->value;
    } else if (!handshake_->keys_awaited) {  // a head handled again after AwaitingKeys keeps its id
        record_.request_id = forward::format_request_id(worker_.rng()(), worker_.rng()());
    }

    if (!listener_->trusted_proxies.empty()) {
        auto peer = net::IpAddress::parse(handshake_->peer_ip);
        const http1::Header* xff = request.find("x-forwarded-for");
        if (peer && xff && listener_->trusted_proxies.contains(*peer)) {
            client_ip_ = net::client_from_forwarded_for(xff->value, *peer, listener_->trusted_proxies).to_string();
            // The resolved client has no port we know of.
            record_.client = client_ip_;
        }
    }
    if (config.limits.handshakes_per_ip > 0 && !handshake_->keys_awaited) {
        std::int64_t retry_after = 0;
        if (!worker_.take_handshake_token(client_ip_, retry_after)) {
            refuse(429, "too many handshakes from this address",
                   "Retry-After: " + std::to_string(std::max<std::int64_t>(retry_after, 1)) + "\r\n");
            return;
        }
    }

    ws::UpgradeCheck check = ws::check_upgrade_request(request);
    if (!check.is_upgrade) {
        start_http(request, head_bytes);
        return;
    }
    if (!check.ok) {
        std::string_view extra;
        if (check.needs_version_header) extra = "Sec-WebSocket-Version: 13\r\n";
        refuse(check.http_status, check.reason, extra);
        return;
    }
    const config::Route* route = config.match_route(record_.host, request.path);
    if (!route) {
        refuse(404, "no route");
        return;
    }
    if (const http1::Header* origin = request.find("origin");
        !route->allowed_origins.empty() && (!origin || !forward::origin_allowed(origin->value, route->allowed_origins))) {
        refuse(403, "origin not allowed");
        return;
    }
    std::string claim_key;
    if (route->auth && !authorize(*route, request, claim_key)) return;
    pool_ = &generation_->pools()[route->pool_index];
    record_.pool = pool_->config->name;
    chash::Key key = chash::extract_key(pool_->config->hash, request, client_ip_);
    if (pool_->config->hash.source == chash::KeySource::Claim && !claim_key.empty()) key = chash::Key{claim_key, false};
    record_.key_fallback = key.fell_back;
    Handshake& hs = *handshake_;
    hs.key_hash = chash::hash_bytes(key.value);
    hs.sticky_index = sticky_backend(*pool_, request);
    hs.client_key = check.key;
    hs.forwarded_head = forward::build_request_head(
        request, forward::ClientFacts{hs.peer_ip, listener_->tls ? "https" : "http", record_.request_id,
                                      hs.added_headers.empty() ? nullptr : &hs.added_headers,
                                      hs.stripped_names.empty() ? nullptr : &hs.stripped_names});

    // The views in <request> die here: the head leaves the input buffer. Any
    // bytes after it stay queued until the tunnel opens.
    evbuffer_drain(bufferevent_get_input(client_.bev), head_bytes);
    bufferevent_disable(client_.bev, EV_READ);
    try_connect();
}

// Verifies the route's JSON Web Token once, at the handshake: after it there
// are no more headers. On success the subject is logged, the chosen claims
// become X-Auth-* headers and <claim_key> holds the pool's hash claim.
bool Session::authorize(const config::Route& route, const http1::RequestHead& request, std::string& claim_key) {
    const config::RouteAuth& auth = *route.auth;
    Handshake& hs = *handshake_;
    // A kept-alive connection authorises each request afresh, and gives
    // back the count its previous request took.
    if (!subject_key.empty()) worker_.shared().subject_limits.release(subject_key);
    subject_key.clear();
    hs.added_headers.clear();
    hs.added_storage.clear();
    hs.stripped_names.clear();
    record_.subject.clear();
    std::optional<std::string> token;
    switch (auth.token_from) {
        case config::TokenSource::Header:
            if (const http1::Header* h = request.find("authorization")) {
                if (auto bearer = jwt::bearer_token(h->value)) token = std::string(*bearer);
            }
            break;
        case config::TokenSource::Cookie:
            if (auto value = cookie::find(request, auth.token_name)) token = std::string(*value);
            break;
        case config::TokenSource::Query: token = jwt::query_value(request.query, auth.token_name); break;
    }
    std::string_view problem = "missing token";
    jwt::Result result;
    // Read before the set is: a fetch that lands after it counts as an answer.
    const std::uint64_t fetches_before = auth.keys ? auth.keys->finished_fetches() : 0;
    if (token) {
        result = verify_route_token(auth, *token, static_cast<std::int64_t>(std::time(nullptr)));
        problem = result.error;
    }
    if (token && result.unknown_key_id && !hs.keys_awaited &&
        keys_worth_awaiting(auth.keys->progress(), fetches_before, fetch_clock_ms())) {
        await_keys(*auth.keys, fetches_before);
        return false;
    }
    if (token && result.ok && auth.max_sessions_per_subject > 0 && !result.claims.header_value("sub")) {
        result.ok = false;  // max_sessions_per_subject has nothing to count it by
        problem = result.error = "token has no subject";
    }
    if (!token || !result.ok) {
        worker_.shared().auth_metrics.auth_failure(auth.label, problem);
        worker_.log().log(obs::Level::Info, "session {}: token refused: {}", record_.request_id, problem);
        refuse(401, problem,
               "WWW-Authenticate: Bearer realm=\"wsgate\", error=\"invalid_token\", error_description=\"" +
                   std::string(problem) + "\"\r\n");
        return false;
    }
    record_.subject = result.claims.header_value("sub").value_or("");
    if (!admit_subject(auth)) return false;
    if (auth.close_on_expiry) {
        const auto wall = std::chrono::system_clock::now().time_since_epoch();
        expire_at_ms_ = expiry_deadline_ms(result.claims, worker_.now_ms(),
                                           std::chrono::duration_cast<std::chrono::milliseconds>(wall).count());
    }
    for (const std::string& claim : auth.forward_claims) {
        if (auto value = result.claims.header_value(claim)) {
            hs.added_storage.push_back(forward::claim_header_name(claim));
            hs.added_storage.push_back(*value);
        }
    }
    for (std::size_t i = 0; i + 1 < hs.added_storage.size(); i += 2) {
        hs.added_headers.push_back(http1::Header{hs.added_storage[i], hs.added_storage[i + 1]});
    }
    // Every X-Auth-* header the route could send is ours, present in this
    // token or not: a client-sent copy must never reach the back end.
    for (const std::string& claim : auth.forward_claims) hs.stripped_names.push_back(forward::claim_header_name(claim));
    const config::Pool& pool = generation_->config().pools[route.pool_index];
    if (pool.hash.source == chash::KeySource::Claim) claim_key = result.claims.header_value(pool.hash.name).value_or("");
    return true;
}

// The token's kid is unknown and a refetch is coming (keys_worth_awaiting):
// the handshake waits for it instead of answering 401, so that the first
// token signed with a rotated-in key passes. The head stays in the client's
// input buffer, whose reads stay on so that a client leaving is noticed
// (the high watermark bounds what it can send meanwhile).
void Session::await_keys(const jwks::Source& keys, std::uint64_t fetches_before) {
    Handshake& hs = *handshake_;
    hs.keys_awaited = true;
    hs.awaited_keys = &keys;
    hs.keys_fetches_before = fetches_before;
    hs.keys_deadline_ms = worker_.now_ms() + keys_wait_bound_ms(generation_->config().timeouts.handshake.count());
    set_state(SessionState::AwaitingKeys);
    arm_timer(kKeysPollMs);
}

// AwaitingKeys, on the poll timer: once a fetch has finished (new set or
// failure) or the wait is over, the head is parsed again from the input
// buffer and handled as before; authorize() then checks the token against
// the set in force and answers without waiting again.
void Session::check_keys() {
    Handshake& hs = *handshake_;
    if (hs.awaited_keys->finished_fetches() == hs.keys_fetches_before && worker_.now_ms() < hs.keys_deadline_ms) {
        arm_timer(kKeysPollMs);
        return;
    }
    const std::size_t max_header_bytes = generation_->config().limits.max_header_bytes;
    evbuffer* input = bufferevent_get_input(client_.bev);
    const std::size_t length = std::min<std::size_t>(evbuffer_get_length(input), max_header_bytes + 1);
    const char* data = reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ev_ssize_t>(length)));
    hs.request_parser = http1::RequestParser(http1::Limits{max_header_bytes, 100, 8192});
    http1::RequestHead request;
    http1::Result result = hs.request_parser.parse(std::string_view(data, length), request);
    if (result.status != http1::Status::Done) {  // the same bytes parsed before: cannot happen
        refuse(500, "request head lost");
        return;
    }
    handle_request(request, result.consumed);
}

// max_sessions_per_subject: counts this session against its verified
// subject on this route (released by the worker when the session ends), or
// answers 429.
bool Session::admit_subject(const config::RouteAuth& auth) {
    SubjectLimits& limits = worker_.shared().subject_limits;
    if (auth.max_sessions_per_subject == 0) return true;
    std::string key = SubjectLimits::key(auth.label, record_.subject);
    if (!limits.acquire(key, auth.max_sessions_per_subject)) {
        worker_.shared().auth_metrics.subject_limit_refusal();
        refuse(429, "too many sessions for this user", "Retry-After: 10\r\n");
        return false;
    }
    subject_key = std::move(key);
    return true;
}

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
    bufferevent_setcb(backend_.bev, &Session::on_backend_read, &Session::on_backend_write,
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
            raw_set_interest(Side::Backend, EV_WRITE);
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
    raw_release(backend_);
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
        raw_set_interest(Side::Backend, EV_READ);
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
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
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
    bufferevent_write(client_.bev, bytes.data(), head_bytes);
    if (bytes.size() > head_bytes) backend_.carry = std::make_unique<std::string>(bytes.substr(head_bytes));
    if (answer == BackendAnswer::Upgrade) {
        open_tunnel(deflate);
        return;
    }
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
    bufferevent_setcb(backend_.bev, &Session::on_backend_read, &Session::on_backend_write,
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
    if (handshake_->lingering) return;
    handshake_->lingering = true;
    evutil_socket_t fd = bufferevent_getfd(client_.bev);
    // A TLS connection cannot be half-closed under OpenSSL's feet.
    if (fd >= 0 && !listener_->tls) shutdown(fd, SHUT_WR);
    bufferevent_enable(client_.bev, EV_READ);
    arm_timer(kLingeringCloseMs);
}

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
        switch_to_raw();
        return;
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
    std::optional<std::array<std::uint8_t, 4>> mask;
    if (to == Side::Backend) {
        auto bits = static_cast<std::uint32_t>(worker_.rng()());
        mask = std::array<std::uint8_t, 4>{};
        std::memcpy(mask->data(), &bits, 4);
    }
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
    std::optional<std::array<std::uint8_t, 4>> mask;
    if (to == Side::Backend) {
        auto bits = static_cast<std::uint32_t>(worker_.rng()());
        mask = std::array<std::uint8_t, 4>{};
        std::memcpy(mask->data(), &bits, 4);
    }
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
        begin_closing("backend removed", "proxy", ws::close_code::service_restart);
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

// ---- Ending ------------------------------------------------------------------

void Session::shut_down() {
    switch (state_) {
        case SessionState::ProxyingHttp:
            http_->shut_down();
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

void Session::schedule_drain(std::int64_t at_ms) {
    drain_at_ms_ = std::min(drain_at_ms_, at_ms);
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
    if (peer.bev) {
        bufferevent_disable(peer.bev, EV_READ);
        bufferevent_setwatermark(peer.bev, EV_WRITE, 0, 0);
    } else {
        peer.read_done = true;
        raw_update_interest(side);
    }
}

void Session::release(Side side) {
    Endpoint& peer = endpoint(side);
    peer.gone = true;
    peer.flushing = false;
    peer.ping_pending = false;
    if (peer.bev) {
        bufferevent_free(peer.bev);
        peer.bev = nullptr;
    }
    raw_release(peer);
}

void Session::finish() {
    if (state_ == SessionState::Closed) return;
    set_state(SessionState::Closed);
    http_.reset();
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
    // like the plain listeners' 503 at accept, so an overload floods no log).
    if (!keepalive_wait_ && !over_limit) {
        worker_.write_access(record_, generation_->config());
        worker_.metrics().session_ended(obs::SessionKey{record_.pool, record_.backend, record_.status},
                                        record_.close_code, record_.close_by);
    }
    worker_.session_finished(this);  // deletes this
}

}  // namespace runtime
