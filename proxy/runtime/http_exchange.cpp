#include "runtime/http_exchange.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include <event2/buffer.h>

#include "balance/sticky.h"
#include "net/stream_socket.h"
#include "runtime/worker.h"

namespace runtime {

namespace {

// A response head larger than this is refused with 502, like the upgrade path.
constexpr std::size_t kMaxResponseHead = 64 * 1024;
// Bytes of a request kept to be sent again when a reused connection turns out
// closed before answering (the race between reuse and the back end's own
// keep-alive timeout). Larger requests get 502 in that case.
constexpr std::size_t kReplayLimit = 64 * 1024;
// The most framing bytes looked at in one step: a chunk-size line is consumed
// in pieces of this size.
constexpr std::size_t kPeek = 256;

void set_nodelay(bufferevent* bev) {
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

std::size_t status_class(int status) { return status >= 100 && status < 600 ? static_cast<std::size_t>(status / 100) : 0; }

constexpr std::size_t kClientToBackend = static_cast<std::size_t>(obs::Dir::ClientToBackend);
constexpr std::size_t kBackendToClient = static_cast<std::size_t>(obs::Dir::BackendToClient);

}  // namespace

HttpExchange::HttpExchange(Worker& worker, std::shared_ptr<const Generation> generation, HttpExchangeOwner& owner,
                           bufferevent* client, obs::AccessRecord& record, HttpRequest request)
    : worker_(worker),
      generation_(std::move(generation)),
      owner_(owner),
      client_(client),
      record_(record),
      request_(std::move(request)),
      response_parser_(http1::Limits{kMaxResponseHead, 100, 8192}) {
    timer_ = evtimer_new(worker_.base(), &HttpExchange::on_timer, this);
}

HttpExchange::~HttpExchange() {
    if (timer_) event_free(timer_);
    discard_upstream();
    release_backend();
}

void HttpExchange::arm_timer(std::int64_t ms) {
    timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    evtimer_add(timer_, &tv);
}

// Progress on a body: the idle timer starts again. The response timer runs
// from the end of the request until the response head instead.
void HttpExchange::touch() {
    const config::Timeouts& timeouts = generation_->config().timeouts;
    if (phase_ == Phase::Sending && request_done_) {
        arm_timer(timeouts.response.count());
    } else if (timeouts.idle.count() > 0) {
        arm_timer(timeouts.idle.count());
    } else {
        evtimer_del(timer_);
    }
}

// ---- Start and connect -----------------------------------------------------

void HttpExchange::start() {
    const std::size_t high = generation_->config().limits.buffer_bytes;
    bufferevent_setwatermark(client_, EV_READ, 0, high);
    bufferevent_setwatermark(client_, EV_WRITE, high / 2, 0);
    request_remaining_ = request_.body.length;
    request_done_ = request_.body.framing == forward::Framing::None ||
                    (request_.body.framing == forward::Framing::Length && request_.body.length == 0);
    if (request_.body.framing == forward::Framing::Chunked) {
        // What of the body has already arrived is checked before any back
        // end hears of the request: a malformed body sent with its head
        // never reaches one (RFC 9112 §11.2).
        evbuffer* input = bufferevent_get_input(client_);
        const std::size_t length = std::min<std::size_t>(evbuffer_get_length(input), high);
        const auto* data = evbuffer_pullup(input, static_cast<ev_ssize_t>(length));
        chunked::Decoder scout = request_chunks_;
        std::size_t pos = 0;
        while (pos < length) {
            const std::size_t rest = length - pos;
            chunked::Step step = scout.step(std::span(data + pos, scout.in_data() ? 0 : rest), rest);
            if (step.kind == chunked::Step::Kind::Error) {
                record_.bytes_in += length;
                respond_error(400, step.reason);
                return;
            }
            if (step.kind == chunked::Step::Kind::Done || step.kind == chunked::Step::Kind::NeedMore) break;
            pos += step.bytes;
        }
    }
    connect_next();
}

void HttpExchange::connect_next() {
    const PoolRuntime& pool = *request_.pool;
    const std::size_t index = pick_backend(pool, request_.key_hash, request_.sticky,
                                           std::span<const std::size_t>(tried_.data(), attempts_), worker_.now_ms());
    if (index == chash::kNone) {
        respond_error(no_backend_status(pool), attempts_ == 0 ? "no backend available" : "backend unreachable");
        return;
    }
    tried_[attempts_++] = index;
    index_ = index;
    backend_state_ = pool.states[index];
    backend_state_->active.fetch_add(1, std::memory_order_relaxed);
    const config::Backend& backend = pool.config->backends[index];
    record_.backend = backend.address.text;
    upstream_key_ = backend.id + '\n' + backend.address.text;
    if (bufferevent* idle = worker_.upstreams().take(upstream_key_)) {
        reused_ = true;
        upstream_ = idle;
        bufferevent_setcb(upstream_, &HttpExchange::on_upstream_read, &HttpExchange::on_upstream_write,
                          &HttpExchange::on_upstream_event, this);
        worker_.metrics().upstream_reused.add();
        record_.connect_ms = 0;
        send_request();
        return;
    }
    open_connection();
}

void HttpExchange::open_connection() {
    const config::Backend& backend = request_.pool->config->backends[index_];
    // A descriptor shortage is this proxy's (503), not the back end's.
    const int fd = net::open_stream_socket(backend.address.storage.ss_family);
    if (fd < 0) {
        local_shortage(errno);
        return;
    }
    upstream_ = bufferevent_socket_new(worker_.base(), fd, BEV_OPT_CLOSE_ON_FREE);
    if (!upstream_) {
        evutil_closesocket(fd);
        respond_error(502, "out of memory");
        return;
    }
    bufferevent_setcb(upstream_, &HttpExchange::on_upstream_read, &HttpExchange::on_upstream_write,
                      &HttpExchange::on_upstream_event, this);
    phase_ = Phase::Connecting;
    connect_started_ms_ = worker_.now_ms();
    arm_timer(generation_->config().timeouts.connect.count());
    // libevent reports a connect() that fails at once through the event
    // callback as well as the return value: only the first may act.
    const unsigned attempt = attempts_;
    if (bufferevent_socket_connect(upstream_, reinterpret_cast<const sockaddr*>(&backend.address.storage),
                                   static_cast<int>(backend.address.length)) < 0 &&
        attempts_ == attempt && phase_ == Phase::Connecting && upstream_) {
        const int error = EVUTIL_SOCKET_ERROR();
        connect_failed(evutil_socket_error_to_string(error), error);
    }
}

void HttpExchange::local_shortage(int error) {
    const char* reason = worker_.backend_socket_shortage(error, record_.backend);
    discard_upstream();
    release_backend();
    respond_error(503, reason);
}

void HttpExchange::connect_failed(const char* why, int error) {
    if (net::is_local_shortage(error)) {
        local_shortage(error);
        return;
    }
    worker_.log().log(obs::Level::Warn, "connect to {} failed: {}", record_.backend, why);
    // Passive health, as for upgrades: enough consecutive failures take the
    // back end out of the hash for a cooldown.
    const config::HealthCheck& health = request_.pool->config->health;
    if (backend_state_->connect_failures.fetch_add(1, std::memory_order_relaxed) + 1 >= health.fall) {
        const std::int64_t now = worker_.now_ms();
        if (backend_state_->down_until_ms.exchange(now + health.cooldown.count(), std::memory_order_relaxed) <= now) {
            worker_.log().log(obs::Level::Warn, "backend {} down for {} ms after {} consecutive connect failures",
                              record_.backend, health.cooldown.count(), health.fall);
        }
    }
    discard_upstream();
    release_backend();
    if (retried_ || attempts_ >= tried_.size()) {
        respond_error(502, "backend unreachable");
        return;
    }
    connect_next();
}

void HttpExchange::connected() {
    backend_state_->connect_failures.store(0, std::memory_order_relaxed);
    if (!retried_) record_.connect_ms = worker_.now_ms() - connect_started_ms_;
    worker_.metrics().upstream_new.add();
    set_nodelay(upstream_);
    send_request();
}

void HttpExchange::send_request() {
    const std::size_t high = generation_->config().limits.buffer_bytes;
    phase_ = Phase::Sending;
    bufferevent_setwatermark(upstream_, EV_READ, 0, kMaxResponseHead + 1);
    bufferevent_setwatermark(upstream_, EV_WRITE, high / 2, 0);
    bufferevent_enable(upstream_, EV_READ);
    if (retried_) {
        bufferevent_write(upstream_, replay_.data(), replay_.size());
        replayable_ = false;
        std::string().swap(replay_);
    } else {
        replayable_ = reused_;
        write_upstream(request_.head.data(), request_.head.size());
        std::string().swap(request_.head);
    }
    touch();
    pump_request();
}

// The reused connection closed before a byte of response: the back end's
// keep-alive timer won the race. The request goes out once more, on a new
// connection to the same back end.
void HttpExchange::retry_on_new_connection() {
    worker_.log().log(obs::Level::Debug, "reused connection to {} closed before answering; retrying", record_.backend);
    discard_upstream();
    retried_ = true;
    reused_ = false;
    open_connection();
}

void HttpExchange::write_upstream(const char* data, std::size_t n) {
    if (replayable_) {
        if (replay_.size() + n > kReplayLimit) {
            replayable_ = false;
            std::string().swap(replay_);
        } else {
            replay_.append(data, n);
        }
    }
    bufferevent_write(upstream_, data, n);
}

void HttpExchange::move_upstream(evbuffer* from, std::size_t n) {
    if (replayable_) {
        if (replay_.size() + n > kReplayLimit) {
            replayable_ = false;
            std::string().swap(replay_);
        } else {
            const std::size_t at = replay_.size();
            replay_.resize(at + n);
            evbuffer_copyout(from, replay_.data() + at, n);
        }
    }
    evbuffer_remove_buffer(from, bufferevent_get_output(upstream_), n);
}

// ---- Client -> back end ------------------------------------------------------

// Moves request body bytes from the client to the back end, re-framed, until
// the body ends, the input is empty or the back end's output is full.
void HttpExchange::pump_request() {
    if (request_done_ || phase_ == Phase::Connecting || phase_ == Phase::Finished || !upstream_) return;
    evbuffer* input = bufferevent_get_input(client_);
    const std::size_t high = generation_->config().limits.buffer_bytes;
    obs::WorkerMetrics& metrics = worker_.metrics();
    bool moved = false;
    while (!request_done_) {
        if (evbuffer_get_length(bufferevent_get_output(upstream_)) >= high) {
            bufferevent_disable(client_, EV_READ);
            client_read_blocked_ = true;
            break;
        }
        const std::size_t available = evbuffer_get_length(input);
        if (available == 0) break;
        if (request_.body.framing == forward::Framing::Length) {
            const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(request_remaining_, available));
            move_upstream(input, n);
            request_remaining_ -= n;
            record_.bytes_in += n;
            metrics.bytes[kClientToBackend].add(n);
            moved = true;
            if (request_remaining_ == 0) request_complete();
            continue;
        }
        std::uint8_t front[kPeek];
        std::size_t peek = 0;
        if (!request_chunks_.in_data()) {
            peek = std::min(available, sizeof front);
            evbuffer_copyout(input, front, peek);
        }
        const chunked::Step step = request_chunks_.step(std::span<const std::uint8_t>(front, peek), available);
        char line[20];
        switch (step.kind) {
            case chunked::Step::Kind::NeedMore: return;
            case chunked::Step::Kind::Framing:
                evbuffer_drain(input, step.bytes);
                record_.bytes_in += step.bytes;
                if (step.chunk_start) write_upstream(line, chunked::encode_size_line(step.chunk_size, line));
                break;
            case chunked::Step::Kind::Data:
                move_upstream(input, step.bytes);
                record_.bytes_in += step.bytes;
                metrics.bytes[kClientToBackend].add(step.bytes);
                moved = true;
                if (step.chunk_end) write_upstream("\r\n", 2);
                break;
            case chunked::Step::Kind::Done:
                evbuffer_drain(input, step.bytes);
                record_.bytes_in += step.bytes;
                write_upstream("0\r\n\r\n", 5);
                request_complete();
                break;
            case chunked::Step::Kind::Error:
                worker_.log().log(obs::Level::Info, "request {}: bad chunked body from the client: {}",
                                  record_.request_id, step.reason);
                if (response_head_sent_) {
                    abort(step.reason, "proxy");
                } else {
                    respond_error(400, step.reason);
                }
                return;
        }
    }
    if (moved && !request_done_) touch();
}

void HttpExchange::request_complete() {
    request_done_ = true;
    if (phase_ == Phase::Sending) touch();
}

// ---- Back end -> client ------------------------------------------------------

void HttpExchange::read_response_head() {
    evbuffer* input = bufferevent_get_input(upstream_);
    while (phase_ == Phase::Sending) {
        const std::size_t available = evbuffer_get_length(input);
        if (available == 0) return;
        response_started_ = true;
        replayable_ = false;
        const std::size_t length = std::min(available, kMaxResponseHead + 1);
        const char* data = reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ev_ssize_t>(length)));
        http1::ResponseHead response;
        const http1::Result result = response_parser_.parse(std::string_view(data, length), response);
        if (result.status == http1::Status::NeedMore) return;
        if (result.status == http1::Status::Error) {
            worker_.log().log(obs::Level::Warn, "bad response head from {}: {}", record_.backend, result.reason);
            respond_error(502, "invalid response from backend");
            return;
        }
        if (response.status == 101) {
            respond_error(502, "backend switched protocols without an upgrade");
            return;
        }
        if (response.status < 200) {
            // Interim responses (100 Continue, 103 Early Hints) go to an
            // HTTP/1.1 client as they come (RFC 9110 §15.2); an HTTP/1.0
            // client must not get them.
            if (request_.version_minor >= 1) {
                const std::string head = forward::build_response_head(response, forward::ResponseFacts{});
                bufferevent_write(client_, head.data(), head.size());
                record_.bytes_out += head.size();
            }
            evbuffer_drain(input, result.consumed);
            response_parser_ = http1::ResponseParser(http1::Limits{kMaxResponseHead, 100, 8192});
            continue;
        }

        const config::Config& config = generation_->config();
        response_in_ = forward::response_body(request_.head_method, response);
        response_out_ = forward::client_body(response_in_, request_.version_minor);
        response_remaining_ = response_in_.length;
        backend_reusable_ = forward::keeps_alive(response) && response_in_.framing != forward::Framing::UntilClose;
        keep_client_ = keep_client_ && request_.keep_alive && !client_eof_ &&
                       response_out_.framing != forward::Framing::UntilClose && config.timeouts.keepalive.count() > 0 &&
                       !worker_.shutting_down();
        std::string cookie;
        const PoolRuntime& pool = *request_.pool;
        if (!pool.sticky_tokens.empty() && index_ != request_.sticky) {
            cookie = sticky::set_cookie(pool.config->sticky_cookie, pool.sticky_tokens[index_]);
        }
        forward::ResponseFacts facts;
        facts.body = response_out_;
        facts.keep_alive = keep_client_;
        facts.client_version_minor = request_.version_minor;
        facts.set_cookie = cookie;
        const std::string head = forward::build_response_head(response, facts);
        record_.status = response.status;
        worker_.metrics().http_requests[status_class(response.status)].add();
        evbuffer_drain(input, result.consumed);
        bufferevent_write(client_, head.data(), head.size());
        record_.bytes_out += head.size();
        response_head_sent_ = true;
        phase_ = Phase::Receiving;
        bufferevent_setwatermark(upstream_, EV_READ, 0, config.limits.buffer_bytes);
        if (response_in_.framing == forward::Framing::None ||
            (response_in_.framing == forward::Framing::Length && response_remaining_ == 0)) {
            response_complete();
            return;
        }
        touch();
        pump_response(false);
        return;
    }
}

// Moves response body bytes from the back end to the client, re-framed,
// until the body ends, the input is empty or (unless <draining>: the back
// end has closed and its last bytes are already in memory) the client's
// output is full.
void HttpExchange::pump_response(bool draining) {
    if (phase_ != Phase::Receiving || !upstream_) return;
    evbuffer* input = bufferevent_get_input(upstream_);
    evbuffer* output = bufferevent_get_output(client_);
    const std::size_t high = generation_->config().limits.buffer_bytes;
    obs::WorkerMetrics& metrics = worker_.metrics();
    const bool chunked_out = response_out_.framing == forward::Framing::Chunked;
    bool moved = false;
    while (phase_ == Phase::Receiving) {
        if (!draining && evbuffer_get_length(output) >= high) {
            bufferevent_disable(upstream_, EV_READ);
            upstream_read_blocked_ = true;
            break;
        }
        const std::size_t available = evbuffer_get_length(input);
        if (available == 0) break;
        char line[20];
        switch (response_in_.framing) {
            case forward::Framing::None: return;
            case forward::Framing::Length: {
                const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(response_remaining_, available));
                evbuffer_remove_buffer(input, output, n);
                response_remaining_ -= n;
                record_.bytes_out += n;
                metrics.bytes[kBackendToClient].add(n);
                moved = true;
                if (response_remaining_ == 0) {
                    response_complete();
                    return;
                }
                break;
            }
            case forward::Framing::UntilClose:
                if (chunked_out) {
                    const std::size_t size_line = chunked::encode_size_line(available, line);
                    evbuffer_add(output, line, size_line);
                    record_.bytes_out += size_line + 2;
                }
                evbuffer_remove_buffer(input, output, available);
                if (chunked_out) evbuffer_add(output, "\r\n", 2);
                record_.bytes_out += available;
                metrics.bytes[kBackendToClient].add(available);
                moved = true;
                break;
            case forward::Framing::Chunked: {
                std::uint8_t front[kPeek];
                std::size_t peek = 0;
                if (!response_chunks_.in_data()) {
                    peek = std::min(available, sizeof front);
                    evbuffer_copyout(input, front, peek);
                }
                const chunked::Step step =
                    response_chunks_.step(std::span<const std::uint8_t>(front, peek), available);
                switch (step.kind) {
                    case chunked::Step::Kind::NeedMore: return;
                    case chunked::Step::Kind::Framing:
                        evbuffer_drain(input, step.bytes);
                        if (step.chunk_start && chunked_out) {
                            const std::size_t size_line = chunked::encode_size_line(step.chunk_size, line);
                            evbuffer_add(output, line, size_line);
                            record_.bytes_out += size_line;
                        }
                        break;
                    case chunked::Step::Kind::Data:
                        evbuffer_remove_buffer(input, output, step.bytes);
                        record_.bytes_out += step.bytes;
                        metrics.bytes[kBackendToClient].add(step.bytes);
                        moved = true;
                        if (step.chunk_end && chunked_out) {
                            evbuffer_add(output, "\r\n", 2);
                            record_.bytes_out += 2;
                        }
                        break;
                    case chunked::Step::Kind::Done:
                        evbuffer_drain(input, step.bytes);
                        if (chunked_out) {
                            evbuffer_add(output, "0\r\n\r\n", 5);
                            record_.bytes_out += 5;
                        }
                        response_complete();
                        return;
                    case chunked::Step::Kind::Error:
                        worker_.log().log(obs::Level::Warn, "bad chunked body from {}: {}", record_.backend, step.reason);
                        abort("invalid response from backend", "backend");
                        return;
                }
                break;
            }
        }
    }
    if (moved) touch();
}

void HttpExchange::response_complete() {
    // A response that ends before its request (an early 413, a refused
    // Expect) leaves request bytes unread on both connections.
    if (!request_done_) {
        keep_client_ = false;
        backend_reusable_ = false;
    }
    if (upstream_ && evbuffer_get_length(bufferevent_get_input(upstream_)) > 0) backend_reusable_ = false;
    const std::int64_t idle = generation_->config().timeouts.keepalive.count();
    // A drained back end keeps no idle connection: the operator is emptying it.
    const bool draining = backend_state_ && backend_state_->draining.load(std::memory_order_relaxed);
    if (upstream_ && backend_reusable_ && idle > 0 && !worker_.shutting_down() && !draining) {
        bufferevent_setcb(upstream_, nullptr, nullptr, nullptr, nullptr);
        worker_.upstreams().put(upstream_key_, upstream_, idle);
        upstream_ = nullptr;
    } else {
        discard_upstream();
    }
    if (client_eof_ && record_.reason.empty()) {
        record_.reason = "client closed";
        record_.close_by = "client";
    }
    finish(keep_client_ && !client_eof_ ? HttpOutcome::KeepAlive : HttpOutcome::Close);
}

void HttpExchange::upstream_closed() {
    switch (phase_) {
        case Phase::Sending:
            if (!response_started_ && reused_ && replayable_ && !retried_) {
                retry_on_new_connection();
                return;
            }
            worker_.log().log(obs::Level::Warn, "backend {} closed before answering request {}", record_.backend,
                              record_.request_id);
            respond_error(502, "backend closed before answering");
            return;
        case Phase::Receiving:
            backend_reusable_ = false;
            pump_response(true);
            if (phase_ != Phase::Receiving) return;
            if (response_in_.framing == forward::Framing::UntilClose) {
                if (response_out_.framing == forward::Framing::Chunked) {
                    evbuffer_add(bufferevent_get_output(client_), "0\r\n\r\n", 5);
                    record_.bytes_out += 5;
                }
                response_complete();
                return;
            }
            abort("backend closed mid-response", "backend");
            return;
        case Phase::Connecting:
        case Phase::Finished: return;
    }
}

// ---- Ending ------------------------------------------------------------------

// Our own answer, before any final response head went to the client.
void HttpExchange::respond_error(int status, std::string_view reason) {
    discard_upstream();
    record_.status = status;
    record_.reason = reason;
    record_.close_by = "proxy";
    worker_.metrics().http_requests[status_class(status)].add();
    const std::string response = forward::error_response(status, reason);
    bufferevent_write(client_, response.data(), response.size());
    record_.bytes_out += response.size();
    finish(HttpOutcome::Close);
}

void HttpExchange::abort(std::string_view reason, const char* close_by) {
    discard_upstream();
    record_.reason = reason;
    record_.close_by = close_by;
    finish(HttpOutcome::Abort);
}

void HttpExchange::finish(HttpOutcome outcome) {
    if (phase_ == Phase::Finished) return;
    phase_ = Phase::Finished;
    evtimer_del(timer_);
    release_backend();
    owner_.exchange_finished(outcome);
}

void HttpExchange::discard_upstream() {
    if (upstream_) {
        bufferevent_free(upstream_);
        upstream_ = nullptr;
    }
}

void HttpExchange::release_backend() {
    if (backend_state_) {
        backend_state_->active.fetch_sub(1, std::memory_order_relaxed);
        backend_state_.reset();
    }
}

// ---- Callbacks -----------------------------------------------------------------

void HttpExchange::on_client_read() {
    if (phase_ == Phase::Finished) return;
    pump_request();
}

void HttpExchange::on_client_write() {
    if (phase_ != Phase::Receiving || !upstream_read_blocked_) return;
    upstream_read_blocked_ = false;
    bufferevent_enable(upstream_, EV_READ);
    pump_response(false);
}

void HttpExchange::on_client_event(short what) {
    if (phase_ == Phase::Finished) {
        client_gone_ = true;
        return;
    }
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && request_done_) {
        // A half-close after a complete request: the response still goes out.
        client_eof_ = true;
        keep_client_ = false;
        return;
    }
    client_gone_ = true;
    abort("client closed", "client");
}

void HttpExchange::on_upstream_read(bufferevent*, void* self) {
    auto* x = static_cast<HttpExchange*>(self);
    if (x->phase_ == Phase::Sending) {
        x->read_response_head();
    } else if (x->phase_ == Phase::Receiving) {
        x->pump_response(false);
    }
}

void HttpExchange::on_upstream_write(bufferevent*, void* self) {
    auto* x = static_cast<HttpExchange*>(self);
    if (!x->client_read_blocked_ || x->phase_ == Phase::Finished) return;
    x->client_read_blocked_ = false;
    bufferevent_enable(x->client_, EV_READ);
    x->pump_request();
}

void HttpExchange::on_upstream_event(bufferevent*, short what, void* self) {
    auto* x = static_cast<HttpExchange*>(self);
    if (x->phase_ == Phase::Connecting) {
        if (what & BEV_EVENT_CONNECTED) {
            x->connected();
        } else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
            const int error = EVUTIL_SOCKET_ERROR();
            x->connect_failed(evutil_socket_error_to_string(error), error);
        }
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) x->upstream_closed();
}

void HttpExchange::on_timer(evutil_socket_t, short, void* self) {
    auto* x = static_cast<HttpExchange*>(self);
    switch (x->phase_) {
        case Phase::Connecting:
            x->connect_failed("connect timeout", ETIMEDOUT);
            break;
        case Phase::Sending:
            if (x->request_done_) {
                x->respond_error(504, "backend response timeout");
            } else {
                x->respond_error(408, "request body timeout");
            }
            break;
        case Phase::Receiving:
            x->abort("idle timeout", "proxy");
            break;
        case Phase::Finished: break;
    }
}

}  // namespace runtime
