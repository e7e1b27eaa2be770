// A worker thread: its own event_base, its own SO_REUSEPORT listening
// sockets, and the sessions it accepted. Nothing on the hot path is shared
// with other workers except the atomics in Shared and BackendState.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "observability/access_log.h"
#include "observability/auth_metrics.h"
#include "observability/error_log.h"
#include "observability/metrics.h"
#include "net/token_bucket.h"
#include "runtime/generation.h"
#include "runtime/subject_limits.h"
#include "runtime/upstream_pool.h"

namespace upgrade {
class Inherited;
}

namespace runtime::uring {
class Ring;
}

namespace runtime {

class Session;

// Process-wide state that every worker reads or updates.
struct Shared {
    obs::ErrorLog* error_log = nullptr;
    obs::LogSink* access_sink = nullptr;
    std::atomic<std::uint64_t> connections{0};  // client connections over all listeners
    // The most client connections the descriptor limit allows (two
    // descriptors each, after a reserve): set once before the workers
    // start; accepts beyond it get a 503 instead of an EMFILE later.
    std::uint64_t descriptor_cap = UINT64_MAX;
    // When a descriptor shortage was last logged (any worker): such
    // errors come in bursts and are logged at most once a second.
    std::atomic<std::int64_t> last_shortage_log_ms{INT64_MIN / 2};

    // Client connections per IP, for limits.max_connections_per_ip. Touched
    // only at accept and close, and only when that limit is on.
    std::mutex per_ip_mutex;
    std::unordered_map<std::string, std::uint64_t> per_ip;

    // limits.handshakes_per_ip, shared by all workers (created on first use,
    // rebuilt when a reload changes the rate).
    std::mutex handshake_mutex;
    std::unique_ptr<net::TokenBucket> handshake_bucket;
    double handshake_rate = 0;
    std::uint32_t handshake_burst = 0;

    // Token authentication: refusals and JWK Set metrics, and
    // max_sessions_per_subject counts (touched at handshakes and session ends).
    obs::AuthMetrics auth_metrics;
    SubjectLimits subject_limits;

    // The newest generation; workers adopt it when notified.
    std::mutex generation_mutex;
    std::shared_ptr<const Generation> generation;

    // Set while the workers bind at start when this process was started by
    // a binary upgrade: the listening sockets the old process passed on.
    upgrade::Inherited* inherited = nullptr;

    std::shared_ptr<const Generation> current_generation() {
        std::lock_guard lock(generation_mutex);
        return generation;
    }
};

class Worker {
public:
    Worker(Shared& shared, unsigned index);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Binds the listeners of the current generation (SO_REUSEPORT), in the
    // calling thread, so that bind errors surface before the workers start.
    bool bind_listeners(std::string& error);
    // Listens on <fd>, an already listening socket bound to <address>
    // (inherited from the process this one upgraded). Before start().
    bool adopt_listener(const config::SocketAddress& address, int fd, std::string& error);
    // (config address, descriptor) of every listening socket, for a binary
    // upgrade to pass on. Any thread.
    std::vector<std::pair<std::string, int>> listener_fds() const;
    void start();   // runs the loop in a new thread
    void join();

    // Called from the main thread: ask this worker to adopt the newest
    // generation, or to stop accepting and close every session gracefully.
    void notify_generation();
    void notify_shutdown();
    // A binary upgrade succeeded: stop accepting (the new process accepts
    // from the same sockets), first emptying the accept queues of the
    // listening sockets in <orphans> (the new process dropped them), then
    // close every session with 1001 spread over the drain window.
    void notify_handoff(std::vector<int> orphans);
    // The operator drained or enabled a back end (BackendState::draining).
    void notify_backends();

    // For sessions.
    event_base* base() const { return base_; }
    Shared& shared() { return shared_; }
    obs::ErrorLog& log() { return *shared_.error_log; }
    std::mt19937_64& rng() { return rng_; }
    obs::WorkerMetrics& metrics() { return metrics_; }
    std::int64_t now_ms() const;  // monotonic, coarse
    void write_access(const obs::AccessRecord& record, const config::Config& config);
    void session_finished(Session* session);
    // A session for an HTTP/2 stream of a connection accepted on <listener>
    // (of <generation>): <bev> is its end of the stream's bufferevent pair.
    // The newest generation serves it when it still has that listener, as
    // the next request on a kept-alive HTTP/1.1 connection.
    void start_h2_stream(bufferevent* bev, const std::shared_ptr<const Generation>& generation,
                         const config::Listener& listener, const std::string& peer_ip, const std::string& client_text,
                         const char* proto);
    bool shutting_down() const { return shutting_down_; }
    // True at most once a second over all workers: whether a descriptor
    // (or other local resource) shortage should be logged now.
    bool shortage_log_due();
    // A back-end socket could not be opened or connected for lack of a
    // local resource (net::is_local_shortage): logs it (rate-limited),
    // counts a refused connection, and returns the reason for the 503.
    const char* backend_socket_shortage(int error, const std::string& backend);
    // limits.max_connections_per_ip: counts <client_ip> in, or false when
    // it is at the limit. Released when the session that got it finishes.
    bool acquire_per_ip(const std::string& client_ip);
    // limits.handshakes_per_ip: false (with seconds until a retry may pass)
    // when <client_ip> is over its rate.
    bool take_handshake_token(const std::string& client_ip, std::int64_t& retry_after_seconds);
    // Where raw tunnels (plain sockets on both sides) read: a read is
    // scanned and forwarded before the next one starts on this thread, so
    // one buffer serves every session and an idle tunnel holds none.
    std::span<std::uint8_t> read_buffer() { return read_buffer_; }
    // Plain HTTP: idle keep-alive connections to back ends.
    UpstreamPool& upstreams() { return upstreams_; }
    // The io_uring that tunnels of a generation with server.io = "io_uring"
    // use for their plain sockets: created on the first call (at start when
    // the configuration asks for it), in this worker's thread. Null when
    // io_uring cannot be set up here, which is logged once: such tunnels
    // use epoll.
    uring::Ring* io_uring();
    // The newest generation this worker adopted (for the next request on a
    // kept-alive connection).
    const std::shared_ptr<const Generation>& generation() const { return generation_; }

private:
    static void on_accept(evconnlistener* listener, evutil_socket_t fd, sockaddr* address, int length,
                          void* self);
    static void on_accept_error(evconnlistener* listener, void* self);
    static void on_notify(evutil_socket_t fd, short what, void* self);
    static void on_drain_deadline(evutil_socket_t fd, short what, void* self);

    struct BoundListener {
        std::string address;  // config text, e.g. "127.0.0.1:8080"
        evconnlistener* listener = nullptr;
    };

    void accept_connection(const BoundListener& bound, evutil_socket_t fd, sockaddr* address, int length);
    const config::Listener* config_listener(const BoundListener& bound) const;
    void refuse_backlog(evconnlistener* listener);
    void start_session(const BoundListener& bound, const config::Listener& listener, evutil_socket_t fd,
                       sockaddr* address, int length, bool over_limit);
    bool bind_one(const config::SocketAddress& address, std::string& error);
    void adopt_generation();
    void reconcile_listeners();
    void drain_removed_backends();
    void apply_backend_drains();
    void begin_shutdown();
    void begin_handoff();
    void close_listeners();
    void maybe_exit();

    Shared& shared_;
    unsigned index_;
    event_base* base_ = nullptr;
    std::vector<BoundListener> listeners_;
    obs::WorkerMetrics metrics_;
    std::shared_ptr<const Generation> generation_;
    UpstreamPool upstreams_;
    std::mt19937_64 rng_;
    int notify_fd_ = -1;           // eventfd: the main thread's wake-up call
    event* notify_event_ = nullptr;
    event* drain_deadline_ = nullptr;
    event* accept_resume_ = nullptr;  // re-enables listeners after EMFILE
    std::atomic<bool> generation_pending_{false};
    std::atomic<bool> shutdown_pending_{false};
    std::atomic<bool> handoff_pending_{false};
    std::atomic<bool> backends_pending_{false};
    bool shutting_down_ = false;
    bool handing_off_ = false;       // shutting down after a binary upgrade: sessions drain spread
    mutable std::mutex listeners_mutex_;  // listeners_ changes vs listener_fds() on the main thread
    std::vector<int> handoff_orphans_;    // guarded by listeners_mutex_
    Session* sessions_ = nullptr;     // intrusive list head
    std::size_t session_count_ = 0;
    // A descriptor held in reserve: when accept() fails with EMFILE it is
    // closed so that the waiting clients can be accepted and told 503,
    // instead of waiting in the backlog for a descriptor (then reopened).
    int reserve_fd_ = -1;
    std::size_t tls_refusals_ = 0;   // sessions with over_limit set: TLS clients being told 503
    std::vector<std::uint8_t> read_buffer_;
    std::unique_ptr<uring::Ring> ring_;  // destroyed in the thread, once the loop has ended
    bool ring_failed_ = false;
    std::thread thread_;
};

}  // namespace runtime
