// The io_uring transport against plain epoll on one libevent loop, as an
// echo server: standalone (`make bench-uring`), not a unit test.
//
//   build/bench_uring MODE CONNECTIONS WINDOW SIZE SECONDS
//
// MODE "uring" echoes through runtime::make_uring_transport on a worker-like
// Ring, MODE "epoll" with one recv() and one send() per readiness event (the
// floor relay's pattern). A forked client on core 1 keeps WINDOW messages of
// SIZE bytes in flight on each of CONNECTIONS loopback connections for
// SECONDS; the server runs on core 0. Prints the server's CPU per message
// (every thread of the server process: io_uring workers included) and, for
// uring, io_uring_enter() calls per message. Count the other system calls
// with perf, e.g.
//   perf stat -i -e 'syscalls:sys_enter_epoll_wait,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto' build/bench_uring uring 64 1 128 3
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <event2/event.h>

#include "runtime/transport_uring.h"
#include "runtime/uring.h"

namespace {

std::vector<std::uint8_t> g_buffer(128 * 1024);
long g_echoed_bytes = 0;

struct Echo final : runtime::TransportUser {
    std::unique_ptr<runtime::Transport> transport;
    void transport_readable(runtime::Side) override {
        const runtime::TransportRead r = transport->read(g_buffer);
        if (r.got == 0) return;
        g_echoed_bytes += static_cast<long>(r.got);
        transport->send(g_buffer.data(), r.got);
    }
    void transport_drained(runtime::Side) override {}
    void transport_failed(runtime::Side) override {}
};

void on_plain_readable(evutil_socket_t fd, short, void* self) {
    const ssize_t n = recv(fd, g_buffer.data(), g_buffer.size(), 0);
    if (n <= 0) {
        event_del(*static_cast<event**>(self));
        return;
    }
    g_echoed_bytes += n;
    const ssize_t sent = send(fd, g_buffer.data(), static_cast<std::size_t>(n), MSG_NOSIGNAL);
    (void)sent;
}

void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

double cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// The client: sends a whole window at once, then for every message echoed
// back one more, in a single send() per read.
[[noreturn]] void run_client(const sockaddr_in& address, int connections, int window, int size, double seconds) {
    pin(1);
    const int poller = epoll_create1(0);
    std::vector<int> fds;
    for (int i = 0; i < connections; ++i) {
        const int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) _exit(1);
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        epoll_event interest{};
        interest.events = EPOLLIN;
        interest.data.u32 = static_cast<std::uint32_t>(i);
        epoll_ctl(poller, EPOLL_CTL_ADD, fd, &interest);
        fds.push_back(fd);
    }
    usleep(200000);  // the server has accepted them all
    const std::string message(static_cast<std::size_t>(size), 'x');
    std::string burst;
    for (int w = 0; w < window; ++w) burst += message;
    for (int fd : fds) {
        const ssize_t n = send(fd, burst.data(), burst.size(), 0);
        (void)n;
    }
    std::vector<long> partial(static_cast<std::size_t>(connections), 0);
    long echoed = 0;
    char chunk[65536];
    epoll_event ready[256];
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
        const int count = epoll_wait(poller, ready, 256, 100);
        for (int j = 0; j < count; ++j) {
            const std::uint32_t i = ready[j].data.u32;
            const ssize_t n = recv(fds[i], chunk, sizeof chunk, 0);
            if (n <= 0) continue;
            partial[i] += n;
            const long complete = partial[i] / size;
            partial[i] %= size;
            echoed += complete;
            if (complete > 0) {
                const ssize_t sent = send(fds[i], burst.data(), static_cast<std::size_t>(complete * size), 0);
                (void)sent;
            }
        }
    }
    std::printf("client: %ld messages echoed, %.0f per second\n", echoed, static_cast<double>(echoed) / seconds);
    std::fflush(stdout);
    _exit(0);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 6 || (std::strcmp(argv[1], "uring") != 0 && std::strcmp(argv[1], "epoll") != 0)) {
        std::fprintf(stderr, "usage: %s uring|epoll CONNECTIONS WINDOW SIZE SECONDS\n", argv[0]);
        return 2;
    }
    const bool uring = std::strcmp(argv[1], "uring") == 0;
    const int connections = std::atoi(argv[2]);
    const int window = std::atoi(argv[3]);
    const int size = std::atoi(argv[4]);
    const double seconds = std::atof(argv[5]);
    if (connections < 1 || window < 1 || size < 1 || seconds <= 0 || static_cast<std::size_t>(window) * size > 65536) {
        std::fprintf(stderr, "bench_uring: positive numbers, and WINDOW * SIZE at most 65536\n");
        return 2;
    }

    const int listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || listen(listener, 4096) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
        std::perror("bench_uring: listen");
        return 1;
    }
    const pid_t client = fork();
    if (client == 0) run_client(address, connections, window, size, seconds);
    pin(0);
    std::vector<int> accepted;
    for (int i = 0; i < connections; ++i) {
        const int fd = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK);
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        accepted.push_back(fd);
    }

    event_config* config = event_config_new();
    event_config_set_flag(config, EVENT_BASE_FLAG_NOLOCK);
    event_config_set_flag(config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_base* base = event_base_new_with_config(config);
    event_config_free(config);
    std::unique_ptr<runtime::uring::Ring> ring;
    std::vector<std::unique_ptr<Echo>> echoes;
    std::vector<event*> events(accepted.size(), nullptr);
    if (uring) {
        std::string error;
        ring = runtime::uring::Ring::create(base, error);
        if (!ring) {
            std::fprintf(stderr, "bench_uring: %s\n", error.c_str());
            return 1;
        }
        for (int fd : accepted) {
            auto echo = std::make_unique<Echo>();
            echo->transport = runtime::make_uring_transport(*ring, fd, *echo, runtime::Side::Backend, g_buffer.size());
            echoes.push_back(std::move(echo));
        }
    } else {
        for (std::size_t i = 0; i < accepted.size(); ++i) {
            events[i] = event_new(base, accepted[i], EV_READ | EV_PERSIST, &on_plain_readable, &events[i]);
            event_add(events[i], nullptr);
        }
    }
    event* stop = evtimer_new(base, [](evutil_socket_t, short, void* b) { event_base_loopexit(static_cast<event_base*>(b), nullptr); }, base);
    const timeval run_for{static_cast<time_t>(seconds) + 1, 0};
    evtimer_add(stop, &run_for);

    const double cpu_before = cpu_seconds();
    const std::uint64_t submits_before = ring ? ring->submits() : 0;
    event_base_dispatch(base);
    const double cpu = cpu_seconds() - cpu_before;
    int status = 0;
    waitpid(client, &status, 0);

    const long messages = g_echoed_bytes / size;
    std::printf("%s: %d connections, window %d, %d B: %ld messages, server CPU %.3f s, %.3f us per message", argv[1],
                connections, window, size, messages, cpu, messages ? cpu * 1e6 / static_cast<double>(messages) : 0.0);
    if (ring && messages) {
        std::printf(", %.3f io_uring_enter per message",
                    static_cast<double>(ring->submits() - submits_before) / static_cast<double>(messages));
    }
    std::printf("\n");
    echoes.clear();
    ring.reset();
    for (event* e : events) {
        if (e) event_free(e);
    }
    event_free(stop);
    event_base_free(base);
    return 0;
}
