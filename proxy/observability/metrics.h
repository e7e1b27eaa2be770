// Metrics: each worker owns its counters and is their only writer, so the hot
// path increments without locked instructions; the admin endpoint sums the
// workers' values at scrape time. Rendering to the Prometheus text format
// (version 0.0.4) is pure.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace obs {

// A counter with a single writer thread and any number of readers: the write
// is a relaxed load and store (a plain add on x86), not a locked RMW.
class Counter {
public:
    void add(std::uint64_t n = 1) { value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    void sub(std::uint64_t n = 1) { value_.store(value_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
    std::uint64_t get() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> value_{0};
};

// Handshake durations (accept to 101 relayed), seconds.
inline constexpr std::array<double, 12> kHandshakeBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                            0.05,   0.1,   0.25,   0.5,   1.0,  5.0};

enum class Dir { ClientToBackend = 0, BackendToClient = 1 };

// Labels of a finished session, used as a map key.
struct SessionKey {
    std::string pool;
    std::string backend;
    int status = 0;
    bool operator<(const SessionKey& o) const {
        return std::tie(pool, backend, status) < std::tie(o.pool, o.backend, o.status);
    }
};

struct CloseKey {
    int code = 0;
    std::string by;
    bool operator<(const CloseKey& o) const { return std::tie(code, by) < std::tie(o.code, o.by); }
};

// One worker's metrics.
struct WorkerMetrics {
    std::array<Counter, 2> bytes;     // indexed by Dir
    std::array<Counter, 2> frames;
    std::array<Counter, 2> messages;
    Counter connections_accepted;
    Counter connections_refused;  // limits: 503 / 429 at accept
    Counter idle_timeouts;
    Counter heartbeat_timeouts;
    Counter heartbeat_pings;
    Counter drained_sessions;     // closed with 1012: a reload removed their back end, or an admin drain
    Counter empty_connections;    // client connections that sent no byte (not in the access log by default)
    std::array<Counter, 6> http_requests;  // plain HTTP responses by status class: [1] 1xx .. [5] 5xx, [0] other
    Counter upstream_new;         // plain HTTP: new back-end connections
    Counter upstream_reused;      // plain HTTP: back-end connections taken from the keep-alive pool
    std::array<Counter, kHandshakeBuckets.size() + 1> handshake_buckets;  // last = +Inf
    Counter handshake_count;
    Counter handshake_micros;
    // HTTP/2 front end (runtime/h2_connection.cpp).
    Counter h2_connections;        // connections that spoke HTTP/2 (h2 or h2c)
    Counter h2_connections_open;   // open now (add and sub: a gauge)
    Counter h2_streams_opened;     // request streams begun
    Counter h2_streams_open;       // open now (add and sub: a gauge)
    Counter h2_streams_refused;    // answered by wsgate itself (400, 413, 501) or reset for oversized headers
    Counter h2_protocol_errors;    // connections ended by an HTTP/2 protocol error or an attack bound
    std::array<Counter, 3> sessions_by_proto;  // finished sessions: [0] http/1.1, [1] h2, [2] h2c

    // Per-session-end tallies: touched once per session, under a mutex that
    // only the scraper contends for.
    std::mutex mutex;
    std::map<SessionKey, std::uint64_t> sessions;
    std::map<CloseKey, std::uint64_t> closes;
    std::map<std::string, std::int64_t> listener_active;  // client connections open now, per listen address

    void connection_opened(const std::string& listener);
    void connection_closed(const std::string& listener);
    void observe_handshake(std::uint64_t micros);
    void session_ended(const SessionKey& key, int close_code, const std::string& close_by);
};

// Process-level facts the main thread knows.
struct BackendSnapshot {
    std::string pool;
    std::string backend;  // id
    std::string address;
    bool up = true;
    bool draining = false;
    std::uint64_t active = 0;
};

struct ProcessSnapshot {
    std::vector<std::string> listeners;  // configured listen addresses (shown even with 0 connections)
    std::vector<BackendSnapshot> backends;
    std::uint64_t generation = 0;
    std::uint64_t reloads_ok = 0;
    std::uint64_t reloads_failed = 0;
    std::uint64_t health_transitions = 0;
    bool draining = false;
};

// Renders the sum over <workers> plus <process> as Prometheus text.
std::string render_prometheus(const std::vector<WorkerMetrics*>& workers, const ProcessSnapshot& process);

// Escapes a label value (backslash, double quote, newline).
std::string escape_label(const std::string& value);

}  // namespace obs
