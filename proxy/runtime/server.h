// The process: the main thread owns signals, configuration generations and
// the workers; it never touches a session.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <event2/event.h>

#include "config/config.h"
#include "observability/error_log.h"
#include "observability/log_sink.h"
#include "runtime/admin.h"
#include "runtime/admin_api.h"
#include "runtime/health.h"
#include "runtime/worker.h"

namespace runtime {

class Server {
public:
    Server(std::string config_path, std::shared_ptr<const config::Config> config);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Opens logs, binds listeners, starts workers and runs until a graceful
    // stop completes. Returns the process exit code.
    int run();

private:
    static void on_signal(evutil_socket_t signal, short, void* self);
    static void on_workers_done(evutil_socket_t fd, short, void* self);
    static void on_trim_tick(evutil_socket_t, short, void* self);

    void reload();
    void begin_shutdown();
    void raise_fd_limit();
    void configure_admin();
    std::string metrics_text() const;
    obs::ProcessSnapshot snapshot() const;
    std::string status_json() const;

    std::string config_path_;
    std::shared_ptr<const config::Config> config_;
    std::unique_ptr<obs::LogSink> error_sink_;
    std::unique_ptr<obs::LogSink> access_sink_;
    std::unique_ptr<obs::ErrorLog> error_log_;
    Shared shared_;
    std::vector<std::unique_ptr<Worker>> workers_;
    event_base* base_ = nullptr;
    std::vector<event*> signal_events_;
    event* workers_done_event_ = nullptr;
    int workers_done_fd_ = -1;
    event* trim_event_ = nullptr;           // periodic: gives freed heap back to the system
    std::uint64_t connections_peak_ = 0;    // most client connections since the last trim
    std::thread joiner_;
    std::unique_ptr<HealthChecker> health_;
    std::unique_ptr<AdminServer> admin_;
    std::unique_ptr<AdminApi> admin_api_;
    std::uint64_t generation_number_ = 1;
    std::uint64_t reloads_ok_ = 0;
    std::uint64_t reloads_failed_ = 0;
    std::uint64_t health_transitions_ = 0;
    bool stopping_ = false;
};

}  // namespace runtime
