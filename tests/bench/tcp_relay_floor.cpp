// tcp_relay_floor: the cheapest user-space TCP relay this benchmark can run,
// as a floor for what any proxy's own CPU per message can be on this machine.
// No parsing at all: the HTTP upgrade and every frame are forwarded blindly.
//
//   tcp_relay_floor --port PORT --backend-port PORT [--host 127.0.0.1]
//
// One thread, level-triggered epoll, non-blocking read()/write() with one
// fixed 64 KiB buffer per direction. A direction reads only when its buffer
// is empty and writes what it read at once; a short write parks the rest and
// waits for EPOLLOUT (the source is not read meanwhile: backpressure). The
// back-end connect is a blocking connect() to a loopback address, which
// completes within the call. EOF or an error on either side closes both.
// SIGTERM/SIGINT stop it (default action).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kBufferBytes = 64 * 1024;

struct Pair;

// One socket and the bytes read from it that still have to go to its peer.
struct Half {
    int fd = -1;
    Half* peer = nullptr;
    Pair* pair = nullptr;
    std::unique_ptr<char[]> buf{new char[kBufferBytes]};
    std::size_t off = 0;
    std::size_t len = 0;
    std::uint32_t interest = 0;  // what epoll currently watches on <fd>
};

struct Pair {
    Half client;
    Half backend;
    bool closed = false;
};

int epfd = -1;
std::vector<Pair*> graveyard;  // closed pairs, freed after the current epoll batch

void set_nodelay(int fd) {
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void close_pair(Pair* p) {
    if (p->closed) return;
    p->closed = true;
    close(p->client.fd);
    close(p->backend.fd);
    graveyard.push_back(p);
}

// Read while our buffer is empty; watch for writability while the peer has
// bytes for us.
void update_interest(Half& h) {
    const std::uint32_t want = (h.len == 0 ? EPOLLIN : 0u) | (h.peer->len > 0 ? EPOLLOUT : 0u);
    if (want == h.interest) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.ptr = &h;
    epoll_ctl(epfd, EPOLL_CTL_MOD, h.fd, &ev);
    h.interest = want;
}

// Writes <src>'s pending bytes to its peer; false when the pair was closed.
bool flush(Half& src) {
    while (src.len > 0) {
        const ssize_t n = write(src.peer->fd, src.buf.get() + src.off, src.len);
        if (n > 0) {
            src.off += static_cast<std::size_t>(n);
            src.len -= static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
        close_pair(src.pair);
        return false;
    }
    if (src.len == 0) src.off = 0;
    return true;
}

void on_event(Half& h, std::uint32_t events) {
    if (h.pair->closed) return;
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && h.len == 0) {
        const ssize_t n = read(h.fd, h.buf.get(), kBufferBytes);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            close_pair(h.pair);
            return;
        }
        if (n > 0) {
            h.off = 0;
            h.len = static_cast<std::size_t>(n);
            if (!flush(h)) return;
        }
    }
    // Hang-up or error with bytes still parked: they can never leave.
    if ((events & (EPOLLHUP | EPOLLERR)) && h.len > 0) {
        close_pair(h.pair);
        return;
    }
    if ((events & EPOLLOUT) && !flush(*h.peer)) return;
    update_interest(h);
    update_interest(*h.peer);
}

bool add(Half& h) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = &h;
    h.interest = EPOLLIN;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, h.fd, &ev) == 0;
}

void accept_all(int listener, const sockaddr_in& backend) {
    for (;;) {
        const int cfd = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) return;  // EAGAIN, or out of descriptors: try again on the next wake-up
        const int bfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (bfd < 0 || connect(bfd, reinterpret_cast<const sockaddr*>(&backend), sizeof backend) < 0 ||
            fcntl(bfd, F_SETFL, O_NONBLOCK) < 0) {
            if (bfd >= 0) close(bfd);
            close(cfd);
            continue;
        }
        set_nodelay(cfd);
        set_nodelay(bfd);
        auto* p = new Pair;
        p->client.fd = cfd;
        p->backend.fd = bfd;
        p->client.peer = &p->backend;
        p->backend.peer = &p->client;
        p->client.pair = p->backend.pair = p;
        if (!add(p->client) || !add(p->backend)) close_pair(p);
    }
}

[[noreturn]] void usage() {
    std::fprintf(stderr, "usage: tcp_relay_floor --port PORT --backend-port PORT [--host 127.0.0.1]\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    std::string host = "127.0.0.1";
    int port = 0;
    int backend_port = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (i + 1 >= argc) usage();
        if (arg == "--host") host = argv[++i];
        else if (arg == "--port") port = std::atoi(argv[++i]);
        else if (arg == "--backend-port") backend_port = std::atoi(argv[++i]);
        else usage();
    }
    if (port <= 0 || port > 65535 || backend_port <= 0 || backend_port > 65535) usage();
    signal(SIGPIPE, SIG_IGN);

    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    sockaddr_in backend{};
    backend.sin_family = AF_INET;
    backend.sin_port = htons(static_cast<std::uint16_t>(backend_port));
    if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) usage();
    inet_pton(AF_INET, "127.0.0.1", &backend.sin_addr);

    const int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 || bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0 ||
        listen(listener, 4096) < 0) {
        std::perror("tcp_relay_floor: bind");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    epoll_event lev{};
    lev.events = EPOLLIN;
    lev.data.ptr = nullptr;  // nullptr marks the listener
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &lev);
    std::printf("tcp_relay_floor listening on %s:%d\n", host.c_str(), port);
    std::fflush(stdout);

    epoll_event events[256];
    for (;;) {
        const int n = epoll_wait(epfd, events, 256, -1);
        if (n < 0 && errno != EINTR) {
            std::perror("tcp_relay_floor: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; ++i) {
            if (!events[i].data.ptr) {
                accept_all(listener, backend);
            } else {
                on_event(*static_cast<Half*>(events[i].data.ptr), events[i].events);
            }
        }
        for (Pair* p : graveyard) delete p;
        graveyard.clear();
    }
}
