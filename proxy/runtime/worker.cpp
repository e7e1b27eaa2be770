#include "runtime/worker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <map>

#include "runtime/admin_route.h"
#include "runtime/forward.h"
#include "runtime/session.h"
#include "runtime/upgrade.h"
#include "runtime/uring.h"

namespace runtime {

namespace {

constexpr int kListenBacklog = 4096;
constexpr std::int64_t kAcceptPauseMs = 100;
// Connections refused through the reserve descriptor per accept failure:
// bounds the time one EMFILE can take from the sessions this worker serves.
constexpr int kMaxBacklogRefusals = 256;
// Idle keep-alive connections kept per back end and worker (plain HTTP).
constexpr std::size_t kMaxIdlePerBackend = 32;
// TLS connections over server.max_connections that a worker answers at once
// with a 503 inside TLS (a handshake costs CPU; beyond this they are closed).
constexpr std::size_t kMaxTlsRefusals = 64;


// Answers a refused connection without creating a session: one non-blocking
// send of a short response, then close. A client whose socket buffer cannot
// take ~150 bytes gets a plain close instead.
void refuse_and_close(evutil_socket_t fd, int status, std::string_view reason) {
    std::string response = forward::error_response(status, reason);
    ssize_t sent = send(fd, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)sent;
    shutdown(fd, SHUT_WR);
    evutil_closesocket(fd);
}

}  // namespace

Worker::Worker(Shared& shared, unsigned index) : shared_(shared), index_(index), upstreams_(kMaxIdlePerBackend) {
    event_config* cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);  // one thread per base: no locks needed
    // Batch epoll_ctl calls per loop turn, so that an event enabled and
    // disabled within one turn costs no system call.
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    base_ = event_base_new_with_config(cfg);
    event_config_free(cfg);
    std::random_device device;
    rng_.seed((static_cast<std::uint64_t>(device()) << 32) ^ device() ^ index);
    notify_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    notify_event_ = event_new(base_, notify_fd_, EV_READ | EV_PERSIST, &Worker::on_notify, this);
    event_add(notify_event_, nullptr);
    drain_deadline_ = evtimer_new(base_, &Worker::on_drain_deadline, this);
    // One read of at most 128 KiB, after the few bytes carried over from
    // the last one (an incomplete frame header or control frame). What the
    // handshake's buffers held at the switch to a raw tunnel can be more;
    // over half of this buffer it is scanned where it is (tunnel.cpp).
    read_buffer_.resize(256 * 1024);
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    accept_resume_ = evtimer_new(base_, [](evutil_socket_t, short, void* self) {
        for (BoundListener& l : static_cast<Worker*>(self)->listeners_) evconnlistener_enable(l.listener);
    }, this);
    generation_ = shared_.current_generation();
}

Worker::~Worker() {
    close_listeners();
    while (sessions_) sessions_->terminate();
    upstreams_.clear();  // before the event base goes
    event_free(accept_resume_);
    event_free(drain_deadline_);
    event_free(notify_event_);
    close(notify_fd_);
    if (reserve_fd_ >= 0) close(reserve_fd_);
    event_base_free(base_);
}

std::int64_t Worker::now_ms() const {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

bool Worker::bind_listeners(std::string& error) {
    for (const config::Listener& listener : generation_->config().listeners) {
        if (!bind_one(listener.listen, error)) return false;
    }
    return true;
}

bool Worker::bind_one(const config::SocketAddress& address, std::string& error) {
    // After a binary upgrade this worker's socket comes from the old
    // process: adopting it keeps its accept queue and the port never closes.
    int inherited = shared_.inherited
                        ? shared_.inherited->take(upgrade::kListen, address.text, index_, address.storage)
                        : -1;
    if (inherited >= 0) return adopt_listener(address, inherited, error);
    int fd = socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error = address.text + ": socket: " + std::strerror(errno);
        return false;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // Every worker binds its own socket; the kernel spreads connections.
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (address.storage.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    // Accepted sockets inherit TCP_NODELAY from the listener: one
    // setsockopt() here instead of one per client.
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&address.storage), address.length) < 0 ||
        listen(fd, kListenBacklog) < 0) {
        error = address.text + ": " + std::strerror(errno);
        close(fd);
        return false;
    }
    return adopt_listener(address, fd, error);
}

bool Worker::adopt_listener(const config::SocketAddress& address, int fd, std::string& error) {
    std::lock_guard lock(listeners_mutex_);
    listeners_.push_back(BoundListener{address.text, nullptr});
    evconnlistener* l = evconnlistener_new(base_, &Worker::on_accept, this, LEV_OPT_CLOSE_ON_FREE, -1, fd);
    if (!l) {
        listeners_.pop_back();
        error = address.text + ": cannot create listener";
        close(fd);
        return false;
    }
    evconnlistener_set_error_cb(l, &Worker::on_accept_error);
    listeners_.back().listener = l;
    return true;
}

std::vector<std::pair<std::string, int>> Worker::listener_fds() const {
    std::lock_guard lock(listeners_mutex_);
    std::vector<std::pair<std::string, int>> out;
    for (const BoundListener& l : listeners_) out.emplace_back(l.address, evconnlistener_get_fd(l.listener));
    return out;
}

void Worker::start() {
    thread_ = std::thread([this] {
        if (generation_->config().server.io == config::Io::IoUring) io_uring();
        event_base_dispatch(base_);
        // The ring accepts submissions from this thread only, and must
        // outlive every transport on it.
        while (sessions_) sessions_->terminate();
        ring_.reset();
    });
}

uring::Ring* Worker::io_uring() {
    if (!ring_ && !ring_failed_) {
        std::string error;
        ring_ = uring::Ring::create(base_, error);
        if (!ring_) {
            ring_failed_ = true;
            log().log(obs::Level::Warn, "worker {}: io_uring cannot be set up ({}); tunnels use epoll", index_,
                      error);
        }
    }
    return ring_.get();
}

void Worker::join() {
    if (thread_.joinable()) thread_.join();
}

void Worker::notify_generation() {
    generation_pending_.store(true);
    std::uint64_t one = 1;
    ssize_t n = write(notify_fd_, &one, sizeof one);
    (void)n;
}

void Worker::notify_shutdown() {
    shutdown_pending_.store(true);
    std::uint64_t one = 1;
    ssize_t n = write(notify_fd_, &one, sizeof one);
    (void)n;
}

void Worker::notify_backends() {
    backends_pending_.store(true);
    std::uint64_t one = 1;
    ssize_t n = write(notify_fd_, &one, sizeof one);
    (void)n;
}

void Worker::on_notify(evutil_socket_t fd, short, void* self) {
    auto* w = static_cast<Worker*>(self);
    std::uint64_t value = 0;
    ssize_t n = read(fd, &value, sizeof value);
    (void)n;
    if (w->generation_pending_.exchange(false)) w->adopt_generation();
    if (w->handoff_pending_.exchange(false)) w->begin_handoff();
    if (w->backends_pending_.exchange(false)) w->apply_backend_drains();
    if (w->shutdown_pending_.exchange(false)) w->begin_shutdown();
}

void Worker::adopt_generation() {
    generation_ = shared_.current_generation();
    if (shutting_down_) return;
    reconcile_listeners();
    drain_removed_backends();
}

// Binds listeners the new generation added and closes those it removed;
// sessions accepted on a closed listener carry on.
void Worker::reconcile_listeners() {
    const auto& wanted = generation_->config().listeners;
    for (auto it = listeners_.begin(); it != listeners_.end();) {
        bool kept = std::any_of(wanted.begin(), wanted.end(),
                                [&](const config::Listener& l) { return l.listen.text == it->address; });
        if (kept) {
            ++it;
        } else {
            log().log(obs::Level::Info, "worker {}: closing listener {}", index_, it->address);
            std::lock_guard lock(listeners_mutex_);
            evconnlistener_free(it->listener);
            it = listeners_.erase(it);
        }
    }
    for (const config::Listener& l : wanted) {
        bool bound = std::any_of(listeners_.begin(), listeners_.end(),
                                 [&](const BoundListener& b) { return b.address == l.listen.text; });
        std::string error;
        if (!bound && !bind_one(l.listen, error)) {
            log().log(obs::Level::Error, "worker {}: cannot listen on {}", index_, error);
        } else if (!bound) {
            log().log(obs::Level::Info, "worker {}: listening on {}", index_, l.listen.text);
        }
    }
}

// Sessions on back ends that the new generation no longer has get close 1012
// at a moment spread uniformly over the drain window, so that their clients
// do not all reconnect at once.
void Worker::drain_removed_backends() {
    std::int64_t window = generation_->config().server.drain_timeout.count();
    std::uniform_int_distribution<std::int64_t> spread(0, std::max<std::int64_t>(window, 0));
    std::int64_t now = now_ms();
    for (Session* s = sessions_; s;) {
        Session* next = s->next;
        const std::string* id = s->backend_id();
        if (id && !generation_->find_state(*id)) s->schedule_drain(now + spread(rng_));
        s = next;
    }
}

// The operator drained or enabled back ends (admin API). Tunnels on a
// draining back end get 1012 at moments spread evenly over its window (the
// middle of n equal slots), so that their clients come back gradually; its
// idle keep-alive connections close now. On a back end enabled again,
// operator drains not yet due are called off.
void Worker::apply_backend_drains() {
    if (shutting_down_) return;
    std::map<BackendState*, std::vector<Session*>> draining;
    for (Session* s = sessions_; s; s = s->next) {
        BackendState* state = s->backend_state();
        if (!state || s->state() == SessionState::Closing || s->state() == SessionState::Closed) continue;
        if (state->draining.load(std::memory_order_relaxed)) {
            draining[state].push_back(s);
        } else {
            s->cancel_operator_drain();
        }
    }
    const std::int64_t now = now_ms();
    for (auto& [state, sessions] : draining) {
        const std::int64_t window = state->drain_window_ms.load(std::memory_order_relaxed);
        for (std::size_t i = 0; i < sessions.size(); ++i) {
            sessions[i]->schedule_drain(now + admin_route::drain_offset_ms(i, sessions.size(), window), true);
        }
    }
    for (const PoolRuntime& pool : generation_->pools()) {
        for (std::size_t i = 0; i < pool.states.size(); ++i) {
            if (pool.states[i]->draining.load(std::memory_order_relaxed)) {
                upstreams_.drop_backend(pool.config->backends[i].id);
            }
        }
    }
}

void Worker::on_accept(evconnlistener* listener, evutil_socket_t fd, sockaddr* address, int length, void* self) {
    auto* w = static_cast<Worker*>(self);
    for (const BoundListener& bound : w->listeners_) {
        if (bound.listener == listener) {
            w->accept_connection(bound, fd, address, length);
            return;
        }
    }
    evutil_closesocket(fd);
}

const config::Listener* Worker::config_listener(const BoundListener& bound) const {
    const config::Listener* listener = nullptr;
    for (const config::Listener& l : generation_->config().listeners) {
        if (l.listen.text == bound.address) listener = &l;
    }
    return listener;
}

void Worker::accept_connection(const BoundListener& bound, evutil_socket_t fd, sockaddr* address, int length) {
    const config::Config& config = generation_->config();
    const config::Listener* listener = config_listener(bound);
    if (shutting_down_ || !listener) {
        // Stopping, or accepted by a listener the newest generation removed
        // (its close is already queued).
        evutil_closesocket(fd);
        return;
    }
    const std::uint64_t cap = std::min<std::uint64_t>(config.server.max_connections, shared_.descriptor_cap);
    if (shared_.connections.fetch_add(1, std::memory_order_relaxed) >= cap) {
        shared_.connections.fetch_sub(1, std::memory_order_relaxed);
        metrics_.connections_refused.add();
        if (!listener->tls) {
            refuse_and_close(fd, 503, "too many connections");
        } else if (tls_refusals_ < kMaxTlsRefusals) {
            // The 503 needs a TLS handshake first: a short session that is not
            // counted in connections, so closing a real session frees a slot
            // at once. The handshake timeout bounds it.
            ++tls_refusals_;
            start_session(bound, *listener, fd, address, length, true);
        } else {
            evutil_closesocket(fd);
        }
        return;
    }
    start_session(bound, *listener, fd, address, length, false);
}

void Worker::start_session(const BoundListener& bound, const config::Listener& listener, evutil_socket_t fd,
                           sockaddr* address, int length, bool over_limit) {
    auto* session = new Session(*this, generation_);
    session->listener_address = bound.address;
    session->over_limit = over_limit;
    if (!over_limit) metrics_.connection_opened(bound.address);
    session->next = sessions_;
    if (sessions_) sessions_->prev = session;
    sessions_ = session;
    ++session_count_;
    session->start(fd, address, static_cast<socklen_t>(length), listener);
}

void Worker::start_h2_stream(bufferevent* bev, const std::shared_ptr<const Generation>& generation,
                             const config::Listener& listener, const std::string& peer_ip, const std::string& client_text,
                             const char* proto) {
    std::shared_ptr<const Generation> serving = generation;
    const config::Listener* serving_listener = &listener;
    for (const config::Listener& l : generation_->config().listeners) {
        if (l.listen.text == listener.listen.text) {
            serving = generation_;
            serving_listener = &l;
        }
    }
    auto* session = new Session(*this, serving);
    session->h2_stream = true;
    session->next = sessions_;
    if (sessions_) sessions_->prev = session;
    sessions_ = session;
    ++session_count_;
    session->start_stream(bev, *serving_listener, peer_ip, client_text, proto);
}

bool Worker::acquire_per_ip(const std::string& client_ip) {
    std::lock_guard lock(shared_.per_ip_mutex);
    std::uint64_t& count = shared_.per_ip[client_ip];
    if (count >= generation_->config().limits.max_connections_per_ip) {
        if (count == 0) shared_.per_ip.erase(client_ip);
        return false;
    }
    ++count;
    return true;
}

void Worker::session_finished(Session* session) {
    if (session->prev) session->prev->next = session->next;
    if (session->next) session->next->prev = session->prev;
    if (sessions_ == session) sessions_ = session->next;
    --session_count_;
    if (!session->per_ip_key.empty()) {
        std::lock_guard lock(shared_.per_ip_mutex);
        auto it = shared_.per_ip.find(session->per_ip_key);
        if (it != shared_.per_ip.end() && --it->second == 0) shared_.per_ip.erase(it);
    }
    if (!session->subject_key.empty()) shared_.subject_limits.release(session->subject_key);
    if (session->over_limit) {
        --tls_refusals_;
    } else if (!session->h2_stream) {
        shared_.connections.fetch_sub(1, std::memory_order_relaxed);
        metrics_.connection_closed(session->listener_address);
    }
    delete session;
    maybe_exit();
}

bool Worker::shortage_log_due() {
    const std::int64_t now = now_ms();
    std::int64_t last = shared_.last_shortage_log_ms.load(std::memory_order_relaxed);
    return now - last >= 1000 &&
           shared_.last_shortage_log_ms.compare_exchange_strong(last, now, std::memory_order_relaxed);
}

const char* Worker::backend_socket_shortage(int error, const std::string& backend) {
    if (shortage_log_due()) {
        log().log(obs::Level::Error, "cannot open a connection to {}: {}; answering 503", backend,
                  evutil_socket_error_to_string(error));
    }
    metrics_.connections_refused.add();
    switch (error) {
        case EMFILE:
        case ENFILE: return "proxy out of file descriptors";
        case EADDRNOTAVAIL: return "proxy out of local ports";
        default: return "proxy out of memory";
    }
}

// Out of file descriptors (or another accept failure): the clients waiting
// in the backlog are answered 503 through the reserve descriptor, then
// accepting pauses for a moment instead of spinning. Logged at most once a
// second.
void Worker::on_accept_error(evconnlistener* listener, void* self) {
    auto* w = static_cast<Worker*>(self);
    int error = EVUTIL_SOCKET_ERROR();
    if (w->shortage_log_due()) {
        w->log().log(obs::Level::Error, "accept failed: {}; waiting connections answered 503, accepts paused for {} ms",
                     evutil_socket_error_to_string(error), kAcceptPauseMs);
    }
    if (error == EMFILE || error == ENFILE) w->refuse_backlog(listener);
    for (BoundListener& l : w->listeners_) evconnlistener_disable(l.listener);
    timeval tv{0, kAcceptPauseMs * 1000};
    evtimer_add(w->accept_resume_, &tv);
}

// Frees the reserve descriptor and uses it to accept and refuse the
// connections queued on <listener> (at most a bounded batch), then takes
// the reserve back. TLS listeners cannot carry a 503 without a handshake:
// their clients get a plain close.
void Worker::refuse_backlog(evconnlistener* listener) {
    if (reserve_fd_ < 0) reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (reserve_fd_ < 0) return;
    const config::Listener* config = nullptr;
    for (const BoundListener& bound : listeners_) {
        if (bound.listener == listener) config = config_listener(bound);
    }
    close(reserve_fd_);
    const int listen_fd = evconnlistener_get_fd(listener);
    for (int refused = 0; refused < kMaxBacklogRefusals; ++refused) {
        int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        metrics_.connections_refused.add();
        if (config && !config->tls) {
            refuse_and_close(fd, 503, "out of file descriptors");
        } else {
            evutil_closesocket(fd);
        }
    }
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

bool Worker::take_handshake_token(const std::string& client_ip, std::int64_t& retry_after_seconds) {
    const config::Limits& limits = generation_->config().limits;
    std::uint32_t burst = limits.handshake_burst > 0
                              ? limits.handshake_burst
                              : static_cast<std::uint32_t>(std::max(1.0, std::ceil(limits.handshakes_per_ip)));
    std::lock_guard lock(shared_.handshake_mutex);
    if (!shared_.handshake_bucket || shared_.handshake_rate != limits.handshakes_per_ip ||
        shared_.handshake_burst != burst) {
        shared_.handshake_bucket = std::make_unique<net::TokenBucket>(
            net::TokenBucket::Options{limits.handshakes_per_ip, burst, 100000});
        shared_.handshake_rate = limits.handshakes_per_ip;
        shared_.handshake_burst = burst;
    }
    std::int64_t now = now_ms();
    if (shared_.handshake_bucket->take(client_ip, now)) return true;
    retry_after_seconds = shared_.handshake_bucket->retry_after_seconds(client_ip, now);
    return false;
}

void Worker::write_access(const obs::AccessRecord& record, const config::Config& config) {
    if (!shared_.access_sink || !shared_.access_sink->enabled()) return;
    shared_.access_sink->write(config.log.format == config::LogFormat::Json ? obs::format_json(record)
                                                                            : obs::format_text(record));
}

void Worker::close_listeners() {
    std::lock_guard lock(listeners_mutex_);
    for (BoundListener& l : listeners_) evconnlistener_free(l.listener);
    listeners_.clear();
}

void Worker::begin_shutdown() {
    // A stop signal during an upgrade's drain closes the rest at once.
    if (shutting_down_ && !handing_off_) return;
    handing_off_ = false;
    shutting_down_ = true;
    close_listeners();
    upstreams_.clear();
    evtimer_del(accept_resume_);
    for (Session* s = sessions_; s;) {
        Session* next = s->next;
        s->shut_down();
        s = next;
    }
    std::int64_t drain = generation_->config().server.drain_timeout.count();
    timeval tv{static_cast<time_t>(drain / 1000), static_cast<suseconds_t>((drain % 1000) * 1000)};
    evtimer_add(drain_deadline_, &tv);
    maybe_exit();
}

void Worker::on_drain_deadline(evutil_socket_t, short, void* self) {
    auto* w = static_cast<Worker*>(self);
    while (w->sessions_) w->sessions_->terminate();
    event_base_loopexit(w->base_, nullptr);
}

void Worker::maybe_exit() {
    if (shutting_down_ && session_count_ == 0) event_base_loopexit(base_, nullptr);
}

}  // namespace runtime
