// Binary upgrade (SIGUSR2): the running process starts a new copy of its
// executable that inherits the listening sockets, waits for it to report
// ready, then hands over and drains. Like nginx's USR2 and HAProxy's -x,
// the kernel's accept queues are never closed: both processes hold the
// same sockets until the old one stops accepting.
//
// The handshake between the two processes:
//   old: fork; in the child clear FD_CLOEXEC on the listeners and the
//        write end of a pipe, exec the executable's path (not the inode:
//        the file may have been replaced), same arguments, with
//          WSGATE_INHERITED_FDS="listen/127.0.0.1:8080/0=5,admin/127.0.0.1:9901/0=7"
//          WSGATE_UPGRADE_READY_FD=9
//   new: adopts what its configuration still needs (match by role, address
//        and index), binds what it adds, starts its workers, writes the pid
//        file, tells systemd MAINPID=, then writes "ready PID unused=KEYS\n"
//        to the pipe. KEYS name the inherited sockets it closed (a listener
//        its configuration dropped): the old process empties their accept
//        queues itself before it closes them.
//   old: on the ready line, stops accepting and closes its sessions with
//        1001 spread over server.drain_timeout, then exits. EOF on the pipe
//        or a timeout before the line: the upgrade failed, the old process
//        keeps serving.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <event2/event.h>

#include "observability/error_log.h"

namespace upgrade {

inline constexpr const char* kInheritedEnv = "WSGATE_INHERITED_FDS";
inline constexpr const char* kReadyFdEnv = "WSGATE_UPGRADE_READY_FD";

// Roles of inherited sockets.
inline constexpr std::string_view kListen = "listen";
inline constexpr std::string_view kAdmin = "admin";

// One listening socket passed across exec. <index> tells apart the
// SO_REUSEPORT sockets of one address (one per worker).
struct InheritedSocket {
    std::string role;     // kListen or kAdmin
    std::string address;  // config::SocketAddress::text, e.g. "127.0.0.1:8080", "[::1]:80"
    unsigned index = 0;
    int fd = -1;

    std::string key() const;  // "role/address/index": names it in the ready line
    bool operator==(const InheritedSocket&) const = default;
};

// ---- Pure parts ------------------------------------------------------------

// "listen/127.0.0.1:8080/0=5,..." for WSGATE_INHERITED_FDS. Roles and
// addresses never contain ',', '=' or '/' (addresses are normalised IP:port).
std::string encode_inherited(std::span<const InheritedSocket> sockets);

// The inverse of encode_inherited. Strict: an empty text is an empty list;
// any malformed entry, a negative or non-numeric fd or index, an fd below 3
// (stdio) or an fd or key named twice is an error (false, <error> says which
// entry and why) and <out> is left empty.
bool decode_inherited(std::string_view text, std::vector<InheritedSocket>& out, std::string& error);

// The pid file's text: the decimal pid and a newline.
std::string pid_file_text(pid_t pid);

// The pid a pid file names ("123\n", "123"), or nullopt for anything else.
std::optional<pid_t> parse_pid_file_text(std::string_view text);

// The new process's readiness report.
struct Ready {
    pid_t pid = 0;
    std::vector<std::string> unused;  // keys of inherited sockets it closed
    bool operator==(const Ready&) const = default;
};

// "ready PID unused=KEY,KEY\n" ("unused=" with nothing after it when none).
std::string encode_ready(const Ready& ready);

// Parses one complete line (with or without its '\n'); nullopt when malformed.
std::optional<Ready> decode_ready(std::string_view line);

// Whether two socket addresses name the same family, address and port.
bool same_address(const sockaddr_storage& a, const sockaddr_storage& b);

// "exited with status 1", "killed by signal 11 (Segmentation fault)".
std::string describe_wait_status(int status);

// ---- Effects ---------------------------------------------------------------

// The executable's path as the kernel resolved it at start
// (/proc/self/exe), or <argv0> when that cannot be read. Resolved once at
// start: after the file is replaced, /proc/self/exe names the deleted inode.
std::string executable_path(const char* argv0);

// Writes <pid> to <path> atomically (a temporary file in the same directory,
// then rename): the file is never missing nor half-written. False with <error>.
bool write_pid_file(const std::string& path, pid_t pid, std::string& error);

// The pid <path> names, or nullopt (missing, unreadable, malformed).
std::optional<pid_t> read_pid_file(const std::string& path);

// Removes <path> only if it still names <pid> (after an upgrade it names
// the new process).
void remove_pid_file_if_ours(const std::string& path, pid_t pid);

// In the new process: the sockets the old one passed, taken from the
// environment once at start (the variables are then unset, so that a
// later upgrade of this process does not pass them on).
class Inherited {
public:
    // Reads and unsets the variables. False with <error> when they are
    // malformed (the process should then refuse to start: the old one keeps
    // serving). Marks every inherited descriptor close-on-exec again.
    bool load_from_environment(std::string& error);

    bool active() const { return ready_fd_ >= 0 || !sockets_.empty(); }

    // The inherited socket for <role>, <address> and <index> when its bound
    // address is <storage> (checked with getsockname), or -1. Taken: it is
    // the caller's to close.
    int take(std::string_view role, const std::string& address, unsigned index, const sockaddr_storage& storage);

    // Inherited listener sockets not taken yet.
    std::vector<InheritedSocket> remaining(std::string_view role) const;

    // Closes every socket not taken; returns their keys.
    std::vector<std::string> close_remaining();

    // Reports readiness to the old process and closes the pipe.
    void report_ready(const std::vector<std::string>& unused);

private:
    std::vector<InheritedSocket> sockets_;
    int ready_fd_ = -1;
};

// In the old process: one upgrade attempt at a time.
class Upgrader {
public:
    using OnReady = std::function<void(const Ready&)>;
    using OnFailed = std::function<void()>;

    Upgrader(event_base* base, obs::ErrorLog& log, OnReady on_ready, OnFailed on_failed);
    ~Upgrader();
    Upgrader(const Upgrader&) = delete;
    Upgrader& operator=(const Upgrader&) = delete;

    // Starts <executable> with <argv> and <sockets> inherited. False with
    // <error> when it could not even fork. The outcome comes later through
    // on_ready or on_failed (logged here with the reason).
    bool start(const std::string& executable, const std::vector<std::string>& argv,
               std::span<const InheritedSocket> sockets, std::string& error);
    bool in_progress() const { return child_ > 0; }
    pid_t child() const { return child_; }

    // Kills a child that has not reported ready (the old process is stopping).
    void abandon();

private:
    static void on_pipe(evutil_socket_t fd, short what, void* self);
    void fail(const std::string& why, bool exiting);

    event_base* base_;
    obs::ErrorLog& log_;
    OnReady on_ready_;
    OnFailed on_failed_;
    pid_t child_ = -1;
    int pipe_fd_ = -1;
    event* pipe_event_ = nullptr;
    std::string received_;
};

}  // namespace upgrade
