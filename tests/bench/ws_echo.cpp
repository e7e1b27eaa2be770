// ws_echo: a single-threaded libevent WebSocket echo back end for the
// benchmark. Answers the opening handshake (RFC 6455 §4.2.2), unmasks client
// frames and echoes each data frame back unmasked with the same FIN and
// opcode, answers pings with pongs (§5.5.2) and completes the closing
// handshake (§5.5.1): it echoes the close frame, then closes TCP once its
// output has drained (the server closes first, §7.1.1).
//
//   ws_echo [--host 127.0.0.1] [--port 0]
// Prints "ws_echo listening on HOST:PORT" once bound; SIGTERM/SIGINT stop it,
// and it then prints one JSON line: how many sessions it upgraded, how many
// of them ended with a close frame from the peer (by close code) and how
// many the peer left without one (TCP closed first): whether a proxy in
// front tells its back end that a client vanished.
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "ws_common.h"

namespace {

using namespace wsbench;

constexpr std::size_t kMaxHead = 16384;
constexpr std::uint64_t kMaxFrame = 64ull << 20;
// Stop reading a client whose echo output passes this many bytes; resume when drained.
constexpr std::size_t kOutputHigh = 4u << 20;

// How the upgraded sessions ended, over the process's life.
struct Endings {
    std::uint64_t upgraded = 0;
    std::map<unsigned, std::uint64_t> close_codes;  // close frames received, by code (1005: none in the frame)
    std::uint64_t without_close = 0;                 // the peer closed TCP (or failed) before any close frame

    void print() const {
        std::uint64_t frames = 0;
        std::string codes;
        for (const auto& [code, n] : close_codes) {
            frames += n;
            codes += (codes.empty() ? "\"" : ",\"") + std::to_string(code) + "\":" + std::to_string(n);
        }
        std::printf("{\"upgraded\":%llu,\"close_frames\":%llu,\"close_codes\":{%s},\"without_close\":%llu}\n",
                    static_cast<unsigned long long>(upgraded), static_cast<unsigned long long>(frames), codes.c_str(),
                    static_cast<unsigned long long>(without_close));
        std::fflush(stdout);
    }
};

struct Conn {
    bufferevent* bev = nullptr;
    Endings* endings = nullptr;
    bool upgraded = false;
    bool closing = false;  // close frame sent: stop reading, free once output drains
    bool paused = false;   // reading stopped because the output passed kOutputHigh
    bool close_seen = false;
};

void free_conn(Conn* c) {
    if (c->upgraded && !c->close_seen) ++c->endings->without_close;
    bufferevent_free(c->bev);
    delete c;
}

void send_frame(evbuffer* out, std::uint8_t opcode, const std::uint8_t* payload, std::uint64_t len) {
    std::uint8_t header[kMaxHeader];
    const std::size_t h = encode_header(header, opcode, len, nullptr);
    evbuffer_add(out, header, h);
    if (len) evbuffer_add(out, payload, len);
}

void start_closing(Conn* c) {
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
}

// Answers the request head; false when the connection must be dropped.
bool handshake(Conn* c, evbuffer* in, evbuffer* out) {
    const evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, nullptr);
    if (end.pos < 0) return evbuffer_get_length(in) <= kMaxHead;
    const std::size_t head_len = static_cast<std::size_t>(end.pos) + 4;
    const char* head = reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(head_len)));
    const std::string_view key = find_header(std::string_view(head, head_len), "Sec-WebSocket-Key");
    if (key.empty()) {
        static constexpr char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        evbuffer_add(out, bad, sizeof bad - 1);
        evbuffer_drain(in, head_len);
        start_closing(c);
        return true;
    }
    const std::string response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 "Sec-WebSocket-Accept: " + accept_key(key) + "\r\n\r\n";
    evbuffer_add(out, response.data(), response.size());
    evbuffer_drain(in, head_len);
    c->upgraded = true;
    ++c->endings->upgraded;
    return true;
}

// Echoes every complete frame in <in>; false when the connection must be dropped.
bool echo_frames(Conn* c, evbuffer* in, evbuffer* out) {
    while (!c->closing) {
        const std::size_t avail = evbuffer_get_length(in);
        std::uint8_t raw[kMaxHeader];
        const std::size_t peek = avail < kMaxHeader ? avail : kMaxHeader;
        evbuffer_copyout(in, raw, peek);
        FrameHeader fh;
        const int r = decode_header(raw, peek, fh);
        if (r < 0 || fh.length > kMaxFrame) return false;
        if (r == 0) return true;
        const std::size_t total = fh.header_length + fh.length;
        if (avail < total) return true;
        std::uint8_t* frame = evbuffer_pullup(in, static_cast<ev_ssize_t>(total));
        std::uint8_t* payload = frame + fh.header_length;
        if (fh.masked) apply_mask(payload, fh.length, fh.mask);
        switch (fh.opcode) {
        case kContinuation:
        case kText:
        case kBinary: {
            std::uint8_t header[kMaxHeader];
            std::size_t h = encode_header(header, fh.opcode, fh.length, nullptr);
            if (!fh.fin) header[0] &= 0x7F;
            evbuffer_add(out, header, h);
            evbuffer_add(out, payload, fh.length);
            break;
        }
        case kPing:
            send_frame(out, kPong, payload, fh.length);
            break;
        case kPong:
            break;
        case kClose:
            c->close_seen = true;
            ++c->endings->close_codes[fh.length >= 2 ? (unsigned{payload[0]} << 8 | payload[1]) : 1005u];
            send_frame(out, kClose, payload, fh.length);
            start_closing(c);
            break;
        default:
            return false;
        }
        evbuffer_drain(in, total);
    }
    return true;
}

void on_read(bufferevent* bev, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    evbuffer* in = bufferevent_get_input(bev);
    evbuffer* out = bufferevent_get_output(bev);
    if (!c->upgraded && !c->closing && !handshake(c, in, out)) return free_conn(c);
    if (c->upgraded && !echo_frames(c, in, out)) return free_conn(c);
    if (!c->closing && evbuffer_get_length(out) > kOutputHigh) {
        c->paused = true;
        bufferevent_disable(bev, EV_READ);
    }
}

void on_write(bufferevent* bev, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    if (c->closing) return free_conn(c);
    if (c->paused) {
        c->paused = false;
        bufferevent_enable(bev, EV_READ);
        on_read(bev, c);
    }
}

void on_event(bufferevent*, short what, void* arg) {
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) free_conn(static_cast<Conn*>(arg));
}

void on_accept(evconnlistener* listener, evutil_socket_t fd, sockaddr*, int, void* endings) {
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    event_base* base = evconnlistener_get_base(listener);
    auto* c = new Conn;
    c->endings = static_cast<Endings*>(endings);
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        delete c;
        return;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

void on_signal(evutil_socket_t, short, void* arg) {
    event_base_loopexit(static_cast<event_base*>(arg), nullptr);
}

void usage() {
    std::fprintf(stderr, "usage: ws_echo [--host 127.0.0.1] [--port PORT]\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    std::string host = "127.0.0.1";
    int port = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (i + 1 >= argc) usage();
        if (arg == "--host") host = argv[++i];
        else if (arg == "--port") port = std::atoi(argv[++i]);
        else usage();
    }
    signal(SIGPIPE, SIG_IGN);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) usage();

    event_base* base = event_base_new();
    Endings endings;
    evconnlistener* listener =
        evconnlistener_new_bind(base, on_accept, &endings, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 4096,
                                reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    if (!listener) {
        std::perror("ws_echo: bind");
        return 1;
    }
    sockaddr_in bound{};
    socklen_t len = sizeof bound;
    getsockname(evconnlistener_get_fd(listener), reinterpret_cast<sockaddr*>(&bound), &len);
    std::printf("ws_echo listening on %s:%d\n", host.c_str(), ntohs(bound.sin_port));
    std::fflush(stdout);

    event* sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    event* sigint = evsignal_new(base, SIGINT, on_signal, base);
    event_add(sigterm, nullptr);
    event_add(sigint, nullptr);
    event_base_dispatch(base);
    endings.print();
    event_free(sigterm);
    event_free(sigint);
    evconnlistener_free(listener);
    event_base_free(base);
    return 0;
}
