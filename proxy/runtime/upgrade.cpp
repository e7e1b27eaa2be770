#include "runtime/upgrade.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <set>

extern char** environ;

namespace upgrade {

namespace {

// How long the new process may take to report ready before the upgrade is
// given up (it is then killed): config parsing, binding, TLS contexts.
constexpr int kReadyTimeoutSeconds = 30;
constexpr std::size_t kMaxReadyLine = 64 * 1024;
// After EOF on the pipe, how long the old process waits for the child's
// exit status (main loop blocked: failures only): 100 x 10 ms.
constexpr int kExitWaitSteps = 100;
constexpr useconds_t kExitWaitStepMicros = 10000;

// A non-negative decimal in canonical form: no sign, no leading zero (so
// that every text decodes to one value and encodes back to itself).
template <typename T>
bool parse_number(std::string_view text, T& out) {
    if (text.empty() || text.size() > 10 || (text.size() > 1 && text[0] == '0')) return false;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size() && out >= 0;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> out;
    while (true) {
        std::size_t at = text.find(separator);
        out.push_back(text.substr(0, at));
        if (at == std::string_view::npos) return out;
        text.remove_prefix(at + 1);
    }
}

void set_cloexec(int fd, bool on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return;
    fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC);
}

}  // namespace

std::string InheritedSocket::key() const {
    return role + "/" + address + "/" + std::to_string(index);
}

std::string encode_inherited(std::span<const InheritedSocket> sockets) {
    std::string out;
    for (const InheritedSocket& s : sockets) {
        if (!out.empty()) out += ',';
        out += s.key() + "=" + std::to_string(s.fd);
    }
    return out;
}

bool decode_inherited(std::string_view text, std::vector<InheritedSocket>& out, std::string& error) {
    out.clear();
    if (text.empty()) return true;
    std::vector<InheritedSocket> sockets;
    std::set<int> fds;
    std::set<std::string> keys;
    for (std::string_view entry : split(text, ',')) {
        auto bad = [&](const char* why) {
            error = "entry \"" + std::string(entry) + "\": " + why;
            return false;
        };
        std::size_t equals = entry.rfind('=');
        if (equals == std::string_view::npos) return bad("expected ROLE/ADDRESS/INDEX=FD");
        std::vector<std::string_view> parts = split(entry.substr(0, equals), '/');
        if (parts.size() != 3) return bad("expected ROLE/ADDRESS/INDEX=FD");
        InheritedSocket s;
        s.role = parts[0];
        s.address = parts[1];
        if (s.role != kListen && s.role != kAdmin) return bad("unknown role");
        if (s.address.empty() || s.address.find('=') != std::string::npos) return bad("bad address");
        if (!parse_number(parts[2], s.index)) return bad("bad index");
        if (!parse_number(entry.substr(equals + 1), s.fd)) return bad("bad descriptor");
        if (s.fd < 3) return bad("descriptor below 3 (standard streams)");
        if (!fds.insert(s.fd).second) return bad("descriptor named twice");
        if (!keys.insert(s.key()).second) return bad("socket named twice");
        sockets.push_back(std::move(s));
    }
    out = std::move(sockets);
    return true;
}

std::string pid_file_text(pid_t pid) { return std::to_string(pid) + "\n"; }

std::optional<pid_t> parse_pid_file_text(std::string_view text) {
    if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    pid_t pid = 0;
    if (!parse_number(text, pid) || pid <= 0) return std::nullopt;
    return pid;
}

std::string encode_ready(const Ready& ready) {
    std::string out = "ready " + std::to_string(ready.pid) + " unused=";
    for (std::size_t i = 0; i < ready.unused.size(); ++i) out += (i ? "," : "") + ready.unused[i];
    return out + "\n";
}

std::optional<Ready> decode_ready(std::string_view line) {
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    std::vector<std::string_view> words = split(line, ' ');
    if (words.size() != 3 || words[0] != "ready" || !words[2].starts_with("unused=")) return std::nullopt;
    Ready ready;
    if (!parse_number(words[1], ready.pid) || ready.pid <= 0) return std::nullopt;
    std::string_view unused = words[2].substr(7);
    if (!unused.empty()) {
        for (std::string_view key : split(unused, ',')) {
            if (key.empty()) return std::nullopt;
            ready.unused.emplace_back(key);
        }
    }
    return ready;
}

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
    if (a.ss_family != b.ss_family) return false;
    if (a.ss_family == AF_INET) {
        const auto& x = reinterpret_cast<const sockaddr_in&>(a);
        const auto& y = reinterpret_cast<const sockaddr_in&>(b);
        return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
    }
    if (a.ss_family == AF_INET6) {
        const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
        const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
        return x.sin6_port == y.sin6_port && std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
    }
    return false;
}

std::string describe_wait_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        const char* name = strsignal(WTERMSIG(status));
        return "killed by signal " + std::to_string(WTERMSIG(status)) + (name ? std::string(" (") + name + ")" : "");
    }
    return "ended with wait status " + std::to_string(status);
}

// ---- Effects -----------------------------------------------------------------

std::string executable_path(const char* argv0) {
    char buffer[4096];
    ssize_t n = readlink("/proc/self/exe", buffer, sizeof buffer - 1);
    if (n > 0) {
        std::string path(buffer, static_cast<std::size_t>(n));
        if (!path.ends_with(" (deleted)")) return path;
    }
    return argv0 ? argv0 : "";
}

bool write_pid_file(const std::string& path, pid_t pid, std::string& error) {
    const std::string temporary = path + ".tmp." + std::to_string(getpid());
    int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        error = temporary + ": " + std::strerror(errno);
        return false;
    }
    const std::string text = pid_file_text(pid);
    bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    int saved = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (ok && rename(temporary.c_str(), path.c_str()) != 0) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        unlink(temporary.c_str());
        error = path + ": " + std::strerror(saved);
    }
    return ok;
}

std::optional<pid_t> read_pid_file(const std::string& path) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    char buffer[32];
    ssize_t n = read(fd, buffer, sizeof buffer);
    close(fd);
    if (n <= 0) return std::nullopt;
    return parse_pid_file_text(std::string_view(buffer, static_cast<std::size_t>(n)));
}

void remove_pid_file_if_ours(const std::string& path, pid_t pid) {
    if (read_pid_file(path) == pid) unlink(path.c_str());
}

bool Inherited::load_from_environment(std::string& error) {
    const char* text = std::getenv(kInheritedEnv);
    const char* ready = std::getenv(kReadyFdEnv);
    std::string inherited = text ? text : "";
    std::string ready_text = ready ? ready : "";
    unsetenv(kInheritedEnv);
    unsetenv(kReadyFdEnv);
    if (!decode_inherited(inherited, sockets_, error)) {
        error = std::string(kInheritedEnv) + ": " + error;
        return false;
    }
    if (!ready_text.empty()) {
        int fd = -1;
        if (!parse_number(std::string_view(ready_text), fd) || fd < 3 || fcntl(fd, F_GETFD) < 0) {
            error = std::string(kReadyFdEnv) + ": not an open descriptor: \"" + ready_text + "\"";
            return false;
        }
        ready_fd_ = fd;
        set_cloexec(fd, true);
    }
    for (const InheritedSocket& s : sockets_) {
        if (fcntl(s.fd, F_GETFD) < 0) {
            error = std::string(kInheritedEnv) + ": descriptor " + std::to_string(s.fd) + " (" + s.key() +
                    ") is not open";
            sockets_.clear();
            return false;
        }
        // Only this process's exec needed them open; a later upgrade of
        // this process passes them on explicitly.
        set_cloexec(s.fd, true);
    }
    return true;
}

int Inherited::take(std::string_view role, const std::string& address, unsigned index,
                    const sockaddr_storage& storage) {
    for (auto it = sockets_.begin(); it != sockets_.end(); ++it) {
        if (it->role != role || it->address != address || it->index != index) continue;
        sockaddr_storage bound{};
        socklen_t length = sizeof bound;
        int listening = 0;
        socklen_t size = sizeof listening;
        // A socket that is not what its name says (bound elsewhere, not
        // listening) is not adopted: it is closed as unused and the address
        // is bound fresh.
        if (getsockname(it->fd, reinterpret_cast<sockaddr*>(&bound), &length) != 0 ||
            !same_address(bound, storage) ||
            getsockopt(it->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0 || !listening) {
            return -1;
        }
        int fd = it->fd;
        sockets_.erase(it);
        return fd;
    }
    return -1;
}

std::vector<InheritedSocket> Inherited::remaining(std::string_view role) const {
    std::vector<InheritedSocket> out;
    for (const InheritedSocket& s : sockets_) {
        if (s.role == role) out.push_back(s);
    }
    return out;
}

std::vector<std::string> Inherited::close_remaining() {
    std::vector<std::string> keys;
    for (const InheritedSocket& s : sockets_) {
        keys.push_back(s.key());
        close(s.fd);
    }
    sockets_.clear();
    return keys;
}

void Inherited::report_ready(const std::vector<std::string>& unused) {
    if (ready_fd_ < 0) return;
    const std::string line = encode_ready(Ready{getpid(), unused});
    ssize_t n = write(ready_fd_, line.data(), line.size());
    (void)n;  // a pipe write this short is atomic; a dead reader means the old process is gone
    close(ready_fd_);
    ready_fd_ = -1;
}

Upgrader::Upgrader(event_base* base, obs::ErrorLog& log, OnReady on_ready, OnFailed on_failed)
    : base_(base), log_(log), on_ready_(std::move(on_ready)), on_failed_(std::move(on_failed)) {}

Upgrader::~Upgrader() {
    if (pipe_event_) event_free(pipe_event_);
    if (pipe_fd_ >= 0) close(pipe_fd_);
}

bool Upgrader::start(const std::string& executable, const std::vector<std::string>& argv,
                     std::span<const InheritedSocket> sockets, std::string& error) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        error = std::string("pipe: ") + std::strerror(errno);
        return false;
    }
    // Everything the child needs is built before fork: between fork and
    // exec a multi-threaded process may only make async-signal-safe calls.
    std::vector<std::string> environment;
    for (char** e = environ; e && *e; ++e) {
        std::string_view entry(*e);
        if (entry.starts_with(std::string(kInheritedEnv) + "=") || entry.starts_with(std::string(kReadyFdEnv) + "="))
            continue;
        environment.emplace_back(entry);
    }
    environment.push_back(std::string(kInheritedEnv) + "=" + encode_inherited(sockets));
    environment.push_back(std::string(kReadyFdEnv) + "=" + std::to_string(fds[1]));
    std::vector<char*> envp;
    for (std::string& e : environment) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = argv;
    std::vector<char*> argp;
    for (std::string& a : args) argp.push_back(a.data());
    argp.push_back(nullptr);
    std::vector<int> keep{fds[1]};
    for (const InheritedSocket& s : sockets) keep.push_back(s.fd);

    const int max_fd = static_cast<int>(std::min<long>(sysconf(_SC_OPEN_MAX), 1 << 20));
    pid_t pid = fork();
    if (pid < 0) {
        error = std::string("fork: ") + std::strerror(errno);
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    if (pid == 0) {
        // The child holds a copy of every descriptor of the old process,
        // client and back-end connections too (libevent accepts without
        // SOCK_CLOEXEC): none may survive exec, or a connection the old
        // process closes would stay open in the new one. Then only this
        // process's copies of the passed sockets lose close-on-exec
        // (descriptor flags are per process).
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
            for (int fd = 3; fd < max_fd; ++fd) {
                int flags = fcntl(fd, F_GETFD);
                if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
            }
        }
        for (int fd : keep) {
            int flags = fcntl(fd, F_GETFD);
            if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        // The path, not the running inode: the file may have been replaced.
        execve(executable.c_str(), argp.data(), envp.data());
        // Tell the old process why (write() is async-signal-safe; the
        // number is formatted by hand for the same reason).
        char line[32] = "exec-failed ";
        std::size_t at = 12;
        char digits[12];
        int length = 0;
        for (int e = errno; length == 0 || e > 0; e /= 10) digits[length++] = static_cast<char>('0' + e % 10);
        while (length > 0) line[at++] = digits[--length];
        line[at++] = '\n';
        ssize_t written = write(fds[1], line, at);
        (void)written;
        _exit(127);
    }
    close(fds[1]);
    child_ = pid;
    pipe_fd_ = fds[0];
    received_.clear();
    pipe_event_ = event_new(base_, pipe_fd_, EV_READ | EV_PERSIST, &Upgrader::on_pipe, this);
    timeval timeout{kReadyTimeoutSeconds, 0};
    event_add(pipe_event_, &timeout);
    log_.log(obs::Level::Info, "upgrade: started {} as pid {}; waiting up to {} s for it to be ready", executable,
             pid, kReadyTimeoutSeconds);
    return true;
}

void Upgrader::on_pipe(evutil_socket_t fd, short what, void* self) {
    auto* u = static_cast<Upgrader*>(self);
    if (what & EV_TIMEOUT) {
        u->fail("was not ready after " + std::to_string(kReadyTimeoutSeconds) + " s", false);
        return;
    }
    char buffer[4096];
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        u->fail("closed its readiness pipe before it was ready", true);
        return;
    }
    u->received_.append(buffer, static_cast<std::size_t>(n));
    std::size_t newline = u->received_.find('\n');
    if (newline == std::string::npos) {
        if (u->received_.size() > kMaxReadyLine) u->fail("sent an overlong readiness line", false);
        return;
    }
    std::string_view line = std::string_view(u->received_).substr(0, newline);
    int exec_errno = 0;
    if (line.starts_with("exec-failed ") && parse_number(line.substr(12), exec_errno)) {
        u->fail(std::string("could not be executed: ") + std::strerror(exec_errno), true);
        return;
    }
    std::optional<Ready> ready = decode_ready(line);
    if (!ready || ready->pid != u->child_) {
        u->fail("sent a malformed readiness line \"" + std::string(line) + "\"", false);
        return;
    }
    event_free(u->pipe_event_);
    u->pipe_event_ = nullptr;
    close(u->pipe_fd_);
    u->pipe_fd_ = -1;
    // The new process outlives this one: it is not waited for here (it is
    // reparented when this process exits).
    u->child_ = -1;
    u->log_.log(obs::Level::Info, "upgrade: new process {} is ready", ready->pid);
    u->on_ready_(*ready);
}

// The attempt is over without a ready line: the child is killed if it still
// runs, reaped, and the reason logged. The listeners were never closed here.
void Upgrader::fail(const std::string& why, bool exiting) {
    pid_t pid = child_;
    if (pipe_event_) event_free(pipe_event_);
    pipe_event_ = nullptr;
    if (pipe_fd_ >= 0) close(pipe_fd_);
    pipe_fd_ = -1;
    child_ = -1;
    int status = 0;
    pid_t reaped = waitpid(pid, &status, WNOHANG);
    // A child that closed the pipe is exiting: its status (why it failed) is
    // worth a short wait.
    for (int i = 0; exiting && reaped == 0 && i < kExitWaitSteps; ++i) {
        usleep(kExitWaitStepMicros);
        reaped = waitpid(pid, &status, WNOHANG);
    }
    if (reaped == 0) {
        // Still running (a timeout, or a line we refuse): it must not keep
        // the inherited listeners and accept from them.
        kill(pid, SIGKILL);
        reaped = waitpid(pid, &status, 0);
    }
    std::string outcome = reaped == pid ? describe_wait_status(status) : "could not be waited for";
    log_.log(obs::Level::Error, "upgrade failed: new process {} {} and {}; this process keeps serving", pid, why,
             outcome);
    on_failed_();
}

void Upgrader::abandon() {
    if (child_ > 0) fail("was abandoned because this process is stopping", false);
}

}  // namespace upgrade
