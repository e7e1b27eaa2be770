#include "runtime/server.h"

#include <signal.h>
#include <malloc.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "config/discovery.h"
#include "observability/access_log.h"
#include "runtime/sd_notify.h"

namespace runtime {

namespace {
// Descriptors kept out of the per-connection budget: listeners, logs,
// event fds, health probes and idle upstream connections.
constexpr rlim_t kDescriptorReserve = 64;
// How often the heap is considered for trimming, and how far connections
// must have fallen from their peak for a trim to be worth its cost.
constexpr int kTrimIntervalSeconds = 5;
constexpr std::uint64_t kTrimMinDrop = 256;
}  // namespace

Server::Server(std::string config_path, std::shared_ptr<const config::Config> config)
    : config_path_(std::move(config_path)),
      config_(discovery::expand(*config, {})),
      file_config_(std::move(config)) {}

Server::~Server() {
    upgrader_.reset();
    resolver_.reset();
    admin_.reset();
    health_.reset();
    jwks_.reset();
    for (event* e : signal_events_) event_free(e);
    if (workers_done_event_) event_free(workers_done_event_);
    if (trim_event_) event_free(trim_event_);
    if (workers_done_fd_ >= 0) close(workers_done_fd_);
    if (base_) event_base_free(base_);
}

// Every session needs two descriptors; the default soft limit (often 1024)
// would cap a proxy at a few hundred sessions.
void Server::raise_fd_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    // Two descriptors per client connection, plus a reserve for listeners,
    // logs, health checks and idle upstream connections. Connections beyond
    // what the limit allows are refused with 503 at accept.
    if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur <= kDescriptorReserve) return;
    shared_.descriptor_cap = (limit.rlim_cur - kDescriptorReserve) / 2;
    if (config_->server.max_connections > shared_.descriptor_cap) {
        error_log_->log(obs::Level::Warn,
                        "server.max_connections = {} needs about {} open files but the limit is {}; "
                        "connections beyond {} will be refused with 503",
                        config_->server.max_connections, config_->server.max_connections * 2 + kDescriptorReserve,
                        limit.rlim_cur, shared_.descriptor_cap);
    }
}

int Server::run() {
    error_sink_ = std::make_unique<obs::LogSink>(config_->log.error, STDERR_FILENO);
    access_sink_ = std::make_unique<obs::LogSink>(config_->log.access, STDOUT_FILENO);
    std::string error;
    if (!error_sink_->open(error) || !access_sink_->open(error)) {
        std::fprintf(stderr, "wsgate: cannot open log: %s\n", error.c_str());
        return 1;
    }
    error_log_ = std::make_unique<obs::ErrorLog>(*error_sink_, static_cast<obs::Level>(config_->log.level));
    shared_.error_log = error_log_.get();
    shared_.access_sink = access_sink_.get();
    shared_.generation = std::make_shared<const Generation>(config_, generation_number_, nullptr);
    if (!inherited_.load_from_environment(error)) {
        error_log_->log(obs::Level::Error, "binary upgrade: {}", error);
        error_sink_->close();
        return 1;
    }
    shared_.inherited = &inherited_;

    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    unsigned count = config_->server.workers;
    if (count == 0) count = std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < count; ++i) {
        auto worker = std::make_unique<Worker>(shared_, i);
        if (!worker->bind_listeners(error)) {
            error_log_->log(obs::Level::Error, "cannot listen on {}", error);
            error_sink_->close();
            return 1;
        }
        workers_.push_back(std::move(worker));
    }
    if (!adopt_inherited_listeners(error)) {
        error_log_->log(obs::Level::Error, "cannot listen on {}", error);
        error_sink_->close();
        return 1;
    }
    shared_.inherited = nullptr;

    base_ = event_base_new();
    for (int signal_number : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) {
        event* e = evsignal_new(base_, signal_number, &Server::on_signal, this);
        event_add(e, nullptr);
        signal_events_.push_back(e);
    }
    workers_done_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    workers_done_event_ = event_new(base_, workers_done_fd_, EV_READ, &Server::on_workers_done, this);
    event_add(workers_done_event_, nullptr);
    trim_event_ = event_new(base_, -1, EV_PERSIST, &Server::on_trim_tick, this);
    timeval trim_interval{kTrimIntervalSeconds, 0};
    event_add(trim_event_, &trim_interval);

    health_ = std::make_unique<HealthChecker>(base_, *error_log_, [this] { ++health_transitions_; });
    health_->configure(shared_.current_generation());
    jwks_ = std::make_unique<JwksFetcher>(base_, *error_log_, shared_.auth_metrics);
    jwks_->configure(shared_.current_generation());
    admin_ = std::make_unique<AdminServer>(base_, *error_log_, [this](std::string_view method, std::string_view path) {
        return handle_admin(method, path);
    });
    if (config_->admin.listen && !listen_admin_at_start(error)) {
        error_log_->log(obs::Level::Error, "cannot listen on admin address {}", error);
        error_sink_->close();
        return 1;
    }
    if (!write_pid_file_at_start()) {
        error_sink_->close();
        return 1;
    }

    for (auto& worker : workers_) worker->start();
    // Pools with DNS names start empty (503) and fill as the names resolve.
    resolver_ = std::make_unique<Resolver>(base_, *error_log_, [this] { membership_changed(); });
    if (!resolver_->configure(*file_config_, error)) error_log_->log(obs::Level::Error, "resolver: {}", error);
    std::string listening;
    for (const config::Listener& l : config_->listeners) listening += (listening.empty() ? "" : ", ") + l.listen.text;
    error_log_->log(obs::Level::Info, "ready: {} worker(s) listening on {} (config {}, generation {})", count,
                    listening, config_path_, generation_number_);
    announce_ready();

    event_base_dispatch(base_);
    upgrader_.reset();
    resolver_.reset();
    admin_.reset();
    health_.reset();
    jwks_.reset();

    if (joiner_.joinable()) joiner_.join();
    workers_.clear();
    if (!pid_file_.empty()) upgrade::remove_pid_file_if_ours(pid_file_, getpid());
    error_log_->log(obs::Level::Info, "stopped");
    access_sink_->close();
    error_sink_->close();
    return 0;
}

// A burst of sessions leaves their buffers' memory in malloc's free lists
// (glibc returns little of it by itself: the chunks are scattered across
// arenas). Once connections have fallen to half their peak, the free pages
// are handed back, so that RSS follows the load down.
void Server::on_trim_tick(evutil_socket_t, short, void* self) {
    auto* server = static_cast<Server*>(self);
    const std::uint64_t now = server->shared_.connections.load(std::memory_order_relaxed);
    server->connections_peak_ = std::max(server->connections_peak_, now);
    if (server->connections_peak_ - now >= kTrimMinDrop && now <= server->connections_peak_ / 2) {
        malloc_trim(0);
        server->connections_peak_ = now;
    }
}

void Server::on_signal(evutil_socket_t signal_number, short, void* self) {
    auto* server = static_cast<Server*>(self);
    switch (signal_number) {
        case SIGHUP: server->reload(); break;
        case SIGUSR2: server->start_upgrade(); break;
        case SIGUSR1:
            server->error_log_->log(obs::Level::Info, "reopening logs");
            server->access_sink_->reopen();
            server->error_sink_->reopen();
            break;
        default:
            if (server->stopping_) {
                // A second stop signal: the operator does not want to wait.
                server->error_log_->log(obs::Level::Warn, "second stop signal: exiting now");
                server->access_sink_->close();
                server->error_sink_->close();
                _exit(1);
            }
            server->begin_shutdown();
            break;
    }
}

void Server::begin_shutdown() {
    stopping_ = true;
    if (upgrader_) upgrader_->abandon();
    // After a hand-over the service lives on in the new process.
    if (!handed_over_) sd_notify("STOPPING=1");
    error_log_->log(obs::Level::Info, "shutting down: closing sessions with 1001, drain timeout {} ms",
                    config_->server.drain_timeout.count());
    for (auto& worker : workers_) worker->notify_shutdown();
    join_workers_async();
}

// Once every worker has finished, the main loop ends (on_workers_done).
void Server::join_workers_async() {
    if (joiner_.joinable()) return;  // a stop signal during an upgrade's drain
    joiner_ = std::thread([this] {
        for (auto& worker : workers_) worker->join();
        std::uint64_t one = 1;
        ssize_t n = write(workers_done_fd_, &one, sizeof one);
        (void)n;
    });
}

void Server::on_workers_done(evutil_socket_t, short, void* self) {
    event_base_loopexit(static_cast<Server*>(self)->base_, nullptr);
}

void Server::reload() {
    if (stopping_ || handed_over_) return;
    sd_notify_reloading();
    config::LoadResult result = config::load_file(config_path_);
    if (auto* errors = std::get_if<std::vector<config::Error>>(&result)) {
        for (const config::Error& e : *errors) error_log_->log(obs::Level::Error, "reload failed: {}", e.to_string());
        ++reloads_failed_;
        sd_notify("READY=1\nSTATUS=reload failed, serving the previous configuration");
        return;
    }
    file_config_ = std::get<std::shared_ptr<const config::Config>>(result);
    // Names followed before keep their members: a reload that changes
    // unrelated keys builds the same pools and moves no key.
    std::string error;
    if (!resolver_->configure(*file_config_, error)) error_log_->log(obs::Level::Error, "resolver: {}", error);
    publish(discovery::expand(*file_config_, resolver_->resolved()));
    jwks_->configure(shared_.current_generation());
    error_log_->set_level(static_cast<obs::Level>(config_->log.level));
    configure_admin();
    ++reloads_ok_;
    error_log_->log(obs::Level::Info, "reloaded {}: generation {}", config_path_, generation_number_);
    sd_notify("READY=1\nSTATUS=serving");
}

// Makes <config> the newest generation, as a reload does: workers adopt it
// and drain sessions on back ends it removed; health checks follow it.
void Server::publish(std::shared_ptr<const config::Config> config) {
    auto previous = shared_.current_generation();
    auto next = std::make_shared<const Generation>(config, ++generation_number_, previous.get());
    {
        std::lock_guard lock(shared_.generation_mutex);
        shared_.generation = next;
    }
    config_ = std::move(config);
    for (auto& worker : workers_) worker->notify_generation();
    health_->configure(next);
}

// A name's members changed: the file's configuration with the new members
// becomes a generation (nothing else changes), and each changed pool is logged.
void Server::membership_changed() {
    if (stopping_) return;
    auto next = discovery::expand(*file_config_, resolver_->resolved());
    bool changed = false;
    for (std::size_t i = 0; i < next->pools.size(); ++i) {
        const discovery::Diff change =
            discovery::diff(discovery::backend_ids(*config_, i), discovery::backend_ids(*next, i));
        const auto& before = config_->pools[i].backends;
        const auto& after = next->pools[i].backends;
        const bool reweighted =
            !change.changed() && !std::equal(before.begin(), before.end(), after.begin(), after.end(),
                                             [](const config::Backend& a, const config::Backend& b) {
                                                 return a.id == b.id && a.weight == b.weight;
                                             });
        if (!change.changed() && !reweighted) continue;
        changed = true;
        resolver_->count_change(next->pools[i].name);
        error_log_->log(obs::Level::Info, "{}{}", discovery::describe(next->pools[i].name, change),
                        reweighted ? " (weights changed)" : "");
    }
    if (changed) publish(std::move(next));
}

void Server::configure_admin() {
    if (!config_->admin.listen) {
        admin_->close();
        return;
    }
    std::string error;
    if (!admin_->listen(*config_->admin.listen, error)) {
        error_log_->log(obs::Level::Error, "cannot listen on admin address {}", error);
    }
}

obs::ProcessSnapshot Server::snapshot() const {
    obs::ProcessSnapshot snap;
    auto generation = const_cast<Shared&>(shared_).current_generation();
    snap.generation = generation->number();
    snap.reloads_ok = reloads_ok_;
    snap.reloads_failed = reloads_failed_;
    snap.health_transitions = health_transitions_;
    snap.draining = stopping_;
    for (const config::Listener& l : generation->config().listeners) snap.listeners.push_back(l.listen.text);
    std::int64_t now = workers_.empty() ? 0 : workers_.front()->now_ms();
    for (const PoolRuntime& pool : generation->pools()) {
        for (std::size_t i = 0; i < pool.config->backends.size(); ++i) {
            const BackendState& state = *pool.states[i];
            snap.backends.push_back(obs::BackendSnapshot{
                pool.config->name, pool.config->backends[i].id, pool.config->backends[i].address.text,
                state.healthy.load() && state.down_until_ms.load() <= now, false, state.active.load()});
        }
    }
    return snap;
}

std::string Server::status_json() const {
    obs::ProcessSnapshot snap = snapshot();
    // Discovered members name the DNS name they came from: (pool, id) -> name.
    std::map<std::pair<std::string, std::string>, std::string> sources;
    for (const config::Pool& pool : config_->pools) {
        for (const config::Backend& b : pool.backends) {
            if (!b.source.empty()) sources[{pool.name, b.id}] = b.source;
        }
    }
    std::string out = fmt::format(R"({{"generation":{},"draining":{},"connections":{},"reloads":{{"success":{},"failure":{}}},"pools":[)",
                                  snap.generation, snap.draining ? "true" : "false", shared_.connections.load(),
                                  snap.reloads_ok, snap.reloads_failed);
    std::string current_pool;
    bool first_pool = true;
    for (const obs::BackendSnapshot& b : snap.backends) {
        if (first_pool || b.pool != current_pool) {
            if (!first_pool) out += "]},";
            out += fmt::format(R"({{"name":"{}","backends":[)", obs::escape_label(b.pool));
            current_pool = b.pool;
            first_pool = false;
        } else {
            out += ',';
        }
        out += fmt::format(R"({{"id":"{}","address":"{}","up":{},"active_sessions":{})", obs::escape_label(b.backend),
                           b.address, b.up ? "true" : "false", b.active);
        const auto source = sources.find({b.pool, b.backend});
        out += source == sources.end() ? "}" : fmt::format(R"(,"source":"{}"}})", obs::escape_label(source->second));
    }
    if (!first_pool) out += "]}";
    out += "]}\n";
    return out;
}

AdminResponse Server::handle_admin(std::string_view method, std::string_view path) {
    if (method != "GET" && method != "HEAD") return AdminResponse{405, "text/plain; charset=utf-8", "use GET\n"};
    if (path == "/metrics") {
        std::vector<obs::WorkerMetrics*> metrics;
        for (auto& worker : workers_) metrics.push_back(&worker->metrics());
        return AdminResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                             obs::render_prometheus(metrics, snapshot()) + resolver_->render_metrics(*config_) +
                                 shared_.auth_metrics.render()};
    }
    if (path == "/healthz") {
        return stopping_ ? AdminResponse{503, "text/plain; charset=utf-8", "draining\n"}
                         : AdminResponse{200, "text/plain; charset=utf-8", "ok\n"};
    }
    if (path == "/status") return AdminResponse{200, "application/json", status_json()};
    return AdminResponse{404, "text/plain; charset=utf-8", "not found: try /metrics, /healthz or /status\n"};
}

}  // namespace runtime
