// Keeps every route's JWK Set current, on the main thread's event loop
// (never on a worker): jwks_file is re-read when its stamp changes (a
// rename or a write; checked every second) and jwks_url is fetched over
// HTTPS with libevent's evhttp client over bufferevent_openssl, verified
// against tls_ca or the system CAs: at start, every jwks_refresh, and at
// once when a worker saw an unknown kid (at most once per 30 s per route;
// the handshake that saw it waits for the answer: Source::progress).
// A new set is published to the workers as an immutable snapshot
// (jwks::Source::publish). A failed read or fetch (I/O, TLS, HTTP status,
// bad JSON, no usable key) keeps the last good set, is counted in
// wsgate_jwks_fetches_total{result="error"} and logged at most once a
// minute per route.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <event2/event.h>

#include "observability/auth_metrics.h"
#include "observability/error_log.h"
#include "runtime/generation.h"

struct evdns_base;
struct evhttp_connection;
struct evhttp_request;

namespace runtime {

// When a jwks_url job fetches next, decided from times alone (pure):
// <now> against the job's schedule. Exposed for the unit test.
struct FetchSchedule {
    std::int64_t next_periodic_ms = 0;               // the next jwks_refresh fetch
    std::int64_t last_kid_fetch_ms = INT64_MIN / 2;  // the last fetch an unknown kid asked for
    bool kid_fetch_pending = false;                  // a worker asked; waiting for the 30 s floor
};
// Whether to fetch now; when the answer is yes because of an unknown kid,
// the schedule records it.
bool fetch_due(FetchSchedule& schedule, std::int64_t now_ms, bool kid_requested);

class JwksFetcher {
public:
    JwksFetcher(event_base* base, obs::ErrorLog& log, obs::AuthMetrics& metrics);
    ~JwksFetcher();
    JwksFetcher(const JwksFetcher&) = delete;
    JwksFetcher& operator=(const JwksFetcher&) = delete;

    // Takes over the JWK Set routes of <generation> (at start and after each
    // reload). A jwks_url route whose URL the previous generation fetched
    // too starts with that set and schedule, so a reload causes no gap.
    void configure(const std::shared_ptr<const Generation>& generation);

    // How long a failed fetch waits before the next try (then jwks_refresh
    // again once one succeeds): short, so that an IdP that was down at
    // start is picked up soon after it is back.
    static constexpr std::int64_t kRetryMs = 5000;

private:
    struct Job;
    static void on_tick(evutil_socket_t, short, void* self);
    static void on_response(evhttp_request* request, void* job);
    void tick();
    void check_file(Job& job);
    void start_fetch(Job& job);
    void finish_fetch(Job& job, evhttp_request* request);
    void fetch_failed(Job& job, const std::string& why);
    void publish(Job& job, std::shared_ptr<const jwks::KeySet> set, const char* what);
    std::int64_t now_ms() const;

    event_base* base_;
    obs::ErrorLog& log_;
    obs::AuthMetrics& metrics_;
    event* tick_ = nullptr;
    evdns_base* dns_ = nullptr;  // created on the first URL with a host name
    std::vector<std::shared_ptr<Job>> jobs_;
    // Jobs a reload dropped while their fetch was in flight: kept until the
    // response arrives (the request callback points at them).
    std::vector<std::shared_ptr<Job>> retired_;
    std::uint64_t ticks_ = 0;
};

}  // namespace runtime
