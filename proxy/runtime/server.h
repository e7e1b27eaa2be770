// The process: the main thread owns signals, configuration generations and
// the workers; it never touches a session.
#pragma once

#include <ctime>
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
#include "runtime/upgrade.h"
#include "runtime/resolver.h"
#include "runtime/jwks_fetcher.h"
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

    // The executable's path (resolved now) and the arguments, for a binary
    // upgrade (SIGUSR2) to start the new copy with. Call before run().
    void set_command_line(int argc, char** argv);

private:
    static void on_signal(evutil_socket_t signal, short, void* self);
    static void on_workers_done(evutil_socket_t fd, short, void* self);
    static void on_trim_tick(evutil_socket_t, short, void* self);

    void reload();
    // Binary upgrade (server_upgrade.cpp).
    bool adopt_inherited_listeners(std::string& error);
    bool listen_admin_at_start(std::string& error);
    bool write_pid_file_at_start();
    void announce_ready();
    void start_upgrade();
    void hand_over(const upgrade::Ready& ready);
    void upgrade_failed();
    void join_workers_async();
    void publish(std::shared_ptr<const config::Config> config);
    void membership_changed();
    void begin_shutdown();
    void raise_fd_limit();
    void configure_admin();
    std::string metrics_text() const;
    obs::ProcessSnapshot snapshot() const;
    std::string status_json() const;

    std::string config_path_;
    std::shared_ptr<const config::Config> config_;       // the file's, with discovered members added
    std::shared_ptr<const config::Config> file_config_;  // as the file says (DNS names unexpanded)
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
    std::unique_ptr<JwksFetcher> jwks_;
    std::unique_ptr<AdminServer> admin_;
    std::unique_ptr<Resolver> resolver_;
    std::unique_ptr<AdminApi> admin_api_;
    std::uint64_t generation_number_ = 1;
    tls::SessionStore tls_sessions_{static_cast<std::int64_t>(std::time(nullptr))};  // ticket keys, session caches
    std::uint64_t reloads_ok_ = 0;
    std::uint64_t reloads_failed_ = 0;
    std::uint64_t health_transitions_ = 0;
    bool stopping_ = false;

    std::string executable_;               // resolved at start: the path, not the inode
    std::vector<std::string> argv_;
    upgrade::Inherited inherited_;         // this process was started by an upgrade
    std::unique_ptr<upgrade::Upgrader> upgrader_;
    std::vector<upgrade::InheritedSocket> passed_;  // what the running upgrade attempt passed on
    bool handed_over_ = false;             // a new process took the listeners; draining
    std::string pid_file_;                 // written at start ("" = none)
};

}  // namespace runtime
