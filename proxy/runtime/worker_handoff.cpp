// The worker's side of a binary upgrade (runtime/upgrade.h): once the new
// process is ready and accepts from the same sockets, this worker stops
// accepting and drains its sessions with spread 1001 closes.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "runtime/session.h"
#include "runtime/worker.h"

namespace runtime {

namespace {

// After a binary upgrade: the last 1001 goes out at drain_timeout; this much
// more lets its close handshake complete before the rest is cut.
constexpr std::int64_t kHandoffGraceMs = 1000;
// Connections taken from a dropped listener's accept queue at hand-off.
constexpr int kMaxOrphanAccepts = 4096;

}  // namespace

void Worker::notify_handoff(std::vector<int> orphans) {
    {
        std::lock_guard lock(listeners_mutex_);
        handoff_orphans_ = std::move(orphans);
    }
    handoff_pending_.store(true);
    std::uint64_t one = 1;
    ssize_t n = write(notify_fd_, &one, sizeof one);
    (void)n;
}

// Listeners the new process closed (its configuration dropped their address)
// are emptied first: what waits in their queues is served here, not reset.
// The others stay open in the new process, which accepts what they hold.
void Worker::begin_handoff() {
    if (shutting_down_) return;
    std::vector<int> orphans;
    {
        std::lock_guard lock(listeners_mutex_);
        orphans = handoff_orphans_;
    }
    // The new process closed these (its configuration dropped their
    // address): what waits in their queues is served here, not reset.
    for (const BoundListener& bound : listeners_) {
        const int listen_fd = evconnlistener_get_fd(bound.listener);
        if (std::find(orphans.begin(), orphans.end(), listen_fd) == orphans.end()) continue;
        int accepted = 0;
        for (; accepted < kMaxOrphanAccepts; ++accepted) {
            sockaddr_storage address{};
            socklen_t length = sizeof address;
            int fd = accept4(listen_fd, reinterpret_cast<sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) break;
            accept_connection(bound, fd, reinterpret_cast<sockaddr*>(&address), static_cast<int>(length));
        }
        log().log(obs::Level::Info, "worker {}: listener {} dropped by the new process: {} queued connection(s) served here",
                  index_, bound.address, accepted);
    }
    shutting_down_ = true;
    handing_off_ = true;
    close_listeners();
    upstreams_.clear();
    evtimer_del(accept_resume_);
    const std::int64_t window = std::max<std::int64_t>(generation_->config().server.drain_timeout.count(), 0);
    std::uniform_int_distribution<std::int64_t> spread(0, window);
    const std::int64_t now = now_ms();
    for (Session* s = sessions_; s;) {
        Session* next = s->next;
        s->hand_off(now + spread(rng_));
        s = next;
    }
    const std::int64_t deadline = window + kHandoffGraceMs;
    timeval tv{static_cast<time_t>(deadline / 1000), static_cast<suseconds_t>((deadline % 1000) * 1000)};
    evtimer_add(drain_deadline_, &tv);
    maybe_exit();
}

}  // namespace runtime
