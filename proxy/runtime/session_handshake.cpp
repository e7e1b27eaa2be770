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
#include "runtime/h2_connection.h"
#include "runtime/session_internal.h"

namespace runtime {

using detail::kCloseLingerMs;
using detail::side_name;

namespace {

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

}  // namespace

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

void Session::start_stream(bufferevent* bev, const config::Listener& listener, const std::string& peer_ip,
                           const std::string& client_text, const char* proto) {
    started_ms_ = worker_.now_ms();
    clock_gettime(CLOCK_MONOTONIC, &handshake_->accepted_at);
    listener_ = &listener;
    handshake_->peer_ip = client_ip_ = peer_ip;
    record_.client = client_text;
    record_.proto = proto;
    h2_possible_ = false;
    client_.h2 = true;
    client_.bev = bev;
    arm_timer(generation_->config().timeouts.handshake.count());
    bufferevent_setcb(client_.bev, &Session::on_client_read, &Session::on_client_write, &Session::on_client_event, this);
    bufferevent_setwatermark(client_.bev, EV_READ, 0, generation_->config().limits.max_header_bytes + 1);
    bufferevent_enable(client_.bev, EV_READ | EV_WRITE);
}

// Whether the first request is HTTP/2 (listener http2 = true): ALPN chose
// "h2" on TLS; on a plain listener the bytes start with the client preface
// (RFC 9113 §3.4, h2c with prior knowledge). True when the connection went
// to an H2Connection, or when the bytes so far are a prefix of the preface
// and more are needed to tell.
bool Session::detect_http2() {
    static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (!listener_->http2 || client_.h2) {
        h2_possible_ = false;
        return false;
    }
    if (listener_->tls) {
        h2_possible_ = false;
        const unsigned char* alpn = nullptr;
        unsigned int length = 0;
        if (SSL* ssl = bufferevent_openssl_get_ssl(client_.bev)) SSL_get0_alpn_selected(ssl, &alpn, &length);
        if (length != 2 || std::memcmp(alpn, "h2", 2) != 0) return false;
        become_http2();
        return true;
    }
    evbuffer* input = bufferevent_get_input(client_.bev);
    const std::size_t length = std::min(evbuffer_get_length(input), kPreface.size());
    const auto* data = reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ev_ssize_t>(length)));
    if (std::string_view(data, length) != kPreface.substr(0, length)) {
        h2_possible_ = false;
        return false;
    }
    if (length < kPreface.size()) return true;
    h2_possible_ = false;
    become_http2();
    return true;
}

// The connection is handed to an H2Connection; this session keeps its
// accounting (connections, per-IP count) until the connection ends.
void Session::become_http2() {
    evtimer_del(timer_);
    set_state(SessionState::Http2);
    bufferevent* bev = client_.bev;
    client_.bev = nullptr;
    client_.gone = true;
    h2_ = std::make_unique<H2Connection>(worker_, *this, bev, generation_, *listener_, client_ip_, record_.client,
                                         listener_->tls != nullptr);
    if (!h2_->start()) {
        record_.reason = "out of memory";
        record_.close_by = "proxy";
        finish();
    }
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
        if (peeked < 0 && net::would_block(errno)) return;
        if (peeked <= 0) {
            record_.reason = "client closed";
            record_.close_by = "client";
            finish();
            return;
        }
        client_spoke_ = true;
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
    if (h2_possible_ && detect_http2()) return;
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
    // bytes after it stay queued until the tunnel opens (bounded by the read
    // watermark). Reading stays on: a client that leaves now is noticed now,
    // and the tunnel's transport takes the socket over without an
    // epoll_ctl() pair (the change list merges the bufferevent's delete with
    // the transport's add).
    evbuffer_drain(bufferevent_get_input(client_.bev), head_bytes);
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

}  // namespace runtime
