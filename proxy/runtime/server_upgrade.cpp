// The Server's side of a binary upgrade (see runtime/upgrade.h): adopting
// inherited sockets at start, the pid file and readiness, starting the new
// process on SIGUSR2 and handing over to it.
#include <unistd.h>

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "runtime/sd_notify.h"
#include "runtime/server.h"

namespace runtime {

void Server::set_command_line(int argc, char** argv) {
    executable_ = upgrade::executable_path(argc > 0 ? argv[0] : nullptr);
    argv_.assign(argv, argv + argc);
}

// Inherited listener sockets beyond this process's worker count (the old
// one ran more workers) are adopted too, by worker index % count: closing
// them would reset the connections in their accept queues. Called after
// every worker took the socket of its own index.
bool Server::adopt_inherited_listeners(std::string& error) {
    for (const upgrade::InheritedSocket& s : inherited_.remaining(upgrade::kListen)) {
        for (const config::Listener& l : config_->listeners) {
            if (l.listen.text != s.address) continue;
            Worker& worker = *workers_[s.index % workers_.size()];
            int fd = inherited_.take(upgrade::kListen, s.address, s.index, l.listen.storage);
            if (fd >= 0 && !worker.adopt_listener(l.listen, fd, error)) return false;
            break;
        }
    }
    return true;
}

bool Server::listen_admin_at_start(std::string& error) {
    const config::SocketAddress& address = *config_->admin.listen;
    int fd = inherited_.take(upgrade::kAdmin, address.text, 0, address.storage);
    if (fd >= 0) return admin_->adopt(address, fd, error);
    return admin_->listen(address, error);
}

// The pid file names this process before its workers start accepting. A
// failure is fatal: at an upgrade the old process then keeps serving and
// the file keeps naming it.
bool Server::write_pid_file_at_start() {
    if (config_->server.pid_file.empty()) return true;
    std::string error;
    if (!upgrade::write_pid_file(config_->server.pid_file, getpid(), error)) {
        error_log_->log(obs::Level::Error, "cannot write server.pid_file {}", error);
        return false;
    }
    pid_file_ = config_->server.pid_file;
    return true;
}

// Workers run: tell systemd (MAINPID= moves the service to this process
// after an upgrade; NotifyAccess=all lets it) and the old process, if any.
// Inherited sockets nobody adopted are closed and named in the ready line.
void Server::announce_ready() {
    const bool upgraded = inherited_.active();
    std::vector<std::string> unused = inherited_.close_remaining();
    sd_notify(fmt::format("MAINPID={}\nREADY=1\nSTATUS=serving", getpid()));
    if (upgraded) {
        error_log_->log(obs::Level::Info, "upgrade: listening on inherited sockets; telling the old process");
        inherited_.report_ready(unused);
    }
    upgrader_ = std::make_unique<upgrade::Upgrader>(
        base_, *error_log_, [this](const upgrade::Ready& ready) { hand_over(ready); },
        [this] { upgrade_failed(); });
}

void Server::start_upgrade() {
    if (stopping_ || handed_over_) {
        error_log_->log(obs::Level::Warn, "SIGUSR2 refused: this process is stopping");
        return;
    }
    if (upgrader_->in_progress()) {
        error_log_->log(obs::Level::Warn, "SIGUSR2 refused: an upgrade is already in progress (new process {})",
                        upgrader_->child());
        return;
    }
    // One entry per listening socket; <index> numbers the SO_REUSEPORT
    // sockets of one address (one per worker).
    passed_.clear();
    std::map<std::string, unsigned> per_address;
    for (auto& worker : workers_) {
        for (auto& [address, fd] : worker->listener_fds()) {
            passed_.push_back(upgrade::InheritedSocket{std::string(upgrade::kListen), address, per_address[address]++, fd});
        }
    }
    if (admin_->fd() >= 0) {
        passed_.push_back(upgrade::InheritedSocket{std::string(upgrade::kAdmin), admin_->address(), 0, admin_->fd()});
    }
    error_log_->log(obs::Level::Info, "SIGUSR2: upgrading: starting {} with {} inherited socket(s)", executable_,
                    passed_.size());
    std::string error;
    if (!upgrader_->start(executable_, argv_, passed_, error)) {
        error_log_->log(obs::Level::Error, "upgrade failed: {}; this process keeps serving", error);
    }
}

// The new process is ready and accepts from the same sockets: stop
// accepting here and drain. The shared sockets stay open in the new process,
// so closing ours loses no queued connection.
void Server::hand_over(const upgrade::Ready& ready) {
    std::vector<int> orphans;
    for (const upgrade::InheritedSocket& s : passed_) {
        if (s.role == upgrade::kListen && std::find(ready.unused.begin(), ready.unused.end(), s.key()) != ready.unused.end())
            orphans.push_back(s.fd);
    }
    passed_.clear();
    if (stopping_) return;  // already closing every session
    handed_over_ = true;
    admin_->close();
    error_log_->log(obs::Level::Info,
                    "upgrade: handed over to pid {}; no longer accepting; sessions get 1001 over {} ms, then exit",
                    ready.pid, config_->server.drain_timeout.count());
    for (auto& worker : workers_) worker->notify_handoff(orphans);
    join_workers_async();
}

// The pid file must keep naming this process: a new process that wrote it
// and then died before it was ready is overruled.
void Server::upgrade_failed() {
    passed_.clear();
    if (pid_file_.empty() || upgrade::read_pid_file(pid_file_) == getpid()) return;
    std::string error;
    if (!upgrade::write_pid_file(pid_file_, getpid(), error)) {
        error_log_->log(obs::Level::Error, "cannot restore server.pid_file {}", error);
    }
}

}  // namespace runtime
