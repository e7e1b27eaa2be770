// The Session's side of plain HTTP proxying: hand a request that is not an
// upgrade to an HttpExchange, take the connection back when the exchange is
// over, and wait for the next request on a kept-alive connection (which may
// be a WebSocket upgrade). One access-log line per request.
#include <chrono>

#include <event2/buffer.h>

#include "balance/chash.h"
#include "runtime/forward.h"
#include "runtime/session.h"
#include "runtime/worker.h"

namespace runtime {

void Session::start_http(const http1::RequestHead& request, std::size_t head_bytes) {
    const config::Config& config = generation_->config();
    record_.has_messages = false;
    // A proxy in front of origin servers has no tunnel to open for CONNECT.
    if (request.method == "CONNECT") {
        refuse(405, "CONNECT not supported");
        return;
    }
    const config::Route* route = config.match_route(record_.host, request.path);
    if (!route) {
        refuse(404, "no route");
        return;
    }
    // A route's token protects its plain requests as much as its upgrades.
    std::string claim_key;
    if (route->auth && !authorize(*route, request, claim_key)) return;
    const PoolRuntime& pool = generation_->pools()[route->pool_index];
    record_.pool = pool.config->name;
    // The same route and key choose the same back end as for an upgrade.
    chash::Key key = chash::extract_key(pool.config->hash, request, client_ip_);
    if (pool.config->hash.source == chash::KeySource::Claim && !claim_key.empty()) key = chash::Key{claim_key, false};
    record_.key_fallback = key.fell_back;

    HttpRequest http;
    http.pool = &pool;
    http.key_hash = chash::hash_bytes(key.value);
    http.sticky = sticky_backend(pool, request);
    http.body = forward::request_body(request);
    const Handshake& hs = *handshake_;
    http.head = forward::build_http_request_head(
        request,
        forward::ClientFacts{handshake_->peer_ip, listener_->tls ? "https" : "http", record_.request_id,
                             hs.added_headers.empty() ? nullptr : &hs.added_headers,
                             hs.stripped_names.empty() ? nullptr : &hs.stripped_names},
        http.body);
    http.head_method = request.method == "HEAD";
    http.version_minor = request.version_minor;
    http.keep_alive = forward::wants_keep_alive(request);

    // The views in <request> die here: the head leaves the input buffer.
    evbuffer_drain(bufferevent_get_input(client_.bev), head_bytes);
    evtimer_del(timer_);
    set_state(SessionState::ProxyingHttp);
    HttpExchangeOwner& owner = *this;  // a private base: converted here, where it is accessible
    http_ = std::make_unique<HttpExchange>(worker_, generation_, owner, client_.bev, record_, std::move(http));
    http_->start();
}

// The exchange is still on the stack: take the connection back on the next
// loop turn.
void Session::exchange_finished(HttpOutcome outcome) {
    http_outcome_ = outcome;
    arm_timer(0);
}

void Session::after_http() {
    const bool gone = http_->client_gone();
    http_.reset();
    // The exchange's watermarks: a write callback only once the output is
    // empty, so that a close never cuts queued bytes.
    bufferevent_setwatermark(client_.bev, EV_WRITE, 0, 0);
    if (gone || http_outcome_ == HttpOutcome::Abort) {
        finish();
        return;
    }
    if (http_outcome_ == HttpOutcome::KeepAlive && !worker_.shutting_down()) {
        write_access_line();
        await_next_request();
        return;
    }
    // Close: as a refusal, flush the response, then close gracefully.
    set_state(SessionState::Refusing);
    handshake_->refusal_until_eof = false;
    handshake_->refusal_body_remaining = 0;
    bufferevent_setwatermark(client_.bev, EV_READ, 0, 0);
    bufferevent_enable(client_.bev, EV_READ);
    arm_timer(generation_->config().timeouts.handshake.count());
    if (evbuffer_get_length(bufferevent_get_output(client_.bev)) == 0) lingering_close();
}

void Session::write_access_line() {
    record_.duration_ms = worker_.now_ms() - started_ms_;
    record_.time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    worker_.write_access(record_, generation_->config());
    worker_.metrics().session_ended(obs::SessionKey{record_.pool, record_.backend, record_.status}, 0, "");
}

// Back to ReadingRequest on the same connection, with the newest
// configuration; a request already buffered (pipelined) is read at once.
void Session::await_next_request() {
    generation_ = worker_.generation();
    const config::Config& config = generation_->config();
    const std::string client = std::move(record_.client);
    record_ = obs::AccessRecord{};
    record_.client = client;
    handshake_->request_parser = http1::RequestParser(http1::Limits{config.limits.max_header_bytes, 100, 8192});
    keepalive_wait_ = true;
    set_state(SessionState::ReadingRequest);
    bufferevent_setwatermark(client_.bev, EV_READ, 0, config.limits.max_header_bytes + 1);
    bufferevent_enable(client_.bev, EV_READ);
    arm_timer(config.timeouts.keepalive.count());
    if (evbuffer_get_length(bufferevent_get_input(client_.bev)) > 0) read_request();
}

}  // namespace runtime
