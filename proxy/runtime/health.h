// Active health checks, run on the main thread's event loop: one probe per
// back end per interval (TCP connect, HTTP GET, or a real WebSocket upgrade
// followed by a ping). `rise` consecutive successes bring a back end up,
// `fall` consecutive failures take it down; the verdict is published in
// BackendState::healthy, which the workers' hash lookups read.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "observability/error_log.h"
#include "protocol/http1.h"
#include "runtime/generation.h"

namespace runtime {

// What a probe's answer means, decided from bytes alone (pure).
enum class ProbeVerdict { NeedMore, Healthy, Unhealthy };

// <received> is everything the back end sent. HTTP: a complete response head
// with status 200-399 is healthy. WebSocket: a valid 101 for <key>, then an
// unmasked pong frame, is healthy; anything else is not.
ProbeVerdict judge_http_probe(std::string_view received);
ProbeVerdict judge_websocket_probe(std::string_view received, std::string_view key);

class HealthChecker {
public:
    HealthChecker(event_base* base, obs::ErrorLog& log, std::function<void()> on_transition);
    ~HealthChecker();
    HealthChecker(const HealthChecker&) = delete;
    HealthChecker& operator=(const HealthChecker&) = delete;

    // Replaces every probe with those of <generation>'s pools.
    void configure(std::shared_ptr<const Generation> generation);

private:
    struct Probe;
    static void on_tick(evutil_socket_t, short, void* self);
    static void on_read(bufferevent* bev, void* self);
    static void on_event(bufferevent* bev, short what, void* self);
    static void on_timeout(evutil_socket_t, short, void* self);

    void start_probe(Probe& probe);
    void finish_probe(Probe& probe, bool healthy, std::string_view why);
    void schedule_probe(Probe& probe);  // the next round, one interval from now

    event_base* base_;
    obs::ErrorLog& log_;
    std::function<void()> on_transition_;
    std::shared_ptr<const Generation> generation_;
    std::vector<std::unique_ptr<Probe>> probes_;
};

}  // namespace runtime
