// ws_loadgen: the benchmark's WebSocket load generator (single thread, libevent).
//
// Modes (all bounded by --duration):
//   echo       --connections N --size BYTES --window W: each connection keeps W
//              masked binary messages in flight; every payload carries an 8-byte
//              send timestamp, an 8-byte sequence number and pseudo-random
//              filler, and every echo is compared byte for byte with what was
//              sent (a difference counts as a mismatch). Latency is the round
//              trip of each message. --messages COUNT stops sending after COUNT.
//   handshake  --connectors N parallel loops of: connect, upgrade (the 101 and
//              Sec-WebSocket-Accept are checked), close handshake, TCP close.
//              With --vanish the client leaves as a closed tab or a lost
//              mobile link does: it closes TCP right after reading the 101,
//              without a close frame (a handshake counts at the 101).
//   idle       opens --connections N sessions (--connectors at a time), holds
//              them, answers pings, optionally sends its own pings every
//              --ping-interval seconds, and reports how many stayed open.
// --warmup S runs traffic before the measured window (echo, handshake).
//   storm      opens --connections N sessions like idle, each with its own
//              query "?k=ID" (so a hashing proxy spreads them), prints
//              {"event":"all_open"} when all are open, then for --duration
//              seconds reconnects every session the server closes, at once;
//              reports reconnects, failed attempts (retried after 100 ms),
//              reconnect latency (close seen -> 101) and the peak
//              reconnects per second (1 s sliding window, 100 ms steps).
// --resume (with --tls) keeps each connection's session and offers it on the
// next connect (tickets or session ID, whatever the server gave); the report
// counts the TLS handshakes that were resumed.
// --tls speaks wss: TLS (OpenSSL defaults, so TLS 1.3 where the server offers
// it) under every connection, with SNI --sni NAME (default "localhost") and
// no certificate verification; every connection does a full handshake (no
// session resumption), so handshake mode measures TLS handshakes too. The
// report names the protocol and cipher the first connection negotiated.
// --cpu-pid P[,P...] sums /proc/P/task/*/schedstat (ns on CPU) over the
// measured window; --rss-pid P[,P...] sums VmRSS before the first connection
// and once every idle session is open (plus --settle seconds).
// Output: one JSON line on stdout. Exit status 1 on errors or mismatches.
#include <arpa/inet.h>
#include <dirent.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "ws_common.h"

namespace {

using namespace wsbench;

enum class Mode { Echo, Handshake, Idle, Storm };

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;
    std::string path = "/";
    Mode mode = Mode::Echo;
    unsigned connections = 64;
    unsigned connectors = 8;
    std::size_t size = 128;
    unsigned window = 1;
    double duration = 5.0;
    double warmup = 0.0;
    double settle = 1.0;
    double ping_interval = 0.0;
    std::uint64_t messages = 0;  // 0 = bounded by time only
    std::uint64_t seed = 1;
    std::vector<int> cpu_pids;
    std::vector<int> rss_pids;
    bool tls = false;
    bool resume = false;
    bool vanish = false;  // handshake mode: close TCP right after the 101, no close frame
    std::string sni = "localhost";
};

// Log-linear latency histogram (ns): 64 sub-buckets per power of two, so a
// reported percentile is within 1/64 (1.6 %) of the true sample.
class Histogram {
public:
    static constexpr int kSubBits = 6;
    static constexpr std::uint64_t kSub = 1u << kSubBits;

    Histogram() : counts_((64 - kSubBits + 1) * kSub, 0) {}

    void record(std::uint64_t v) {
        ++counts_[index(v)];
        ++total_;
        max_ = std::max(max_, v);
    }
    void clear() {
        std::fill(counts_.begin(), counts_.end(), 0);
        total_ = 0;
        max_ = 0;
    }
    std::uint64_t total() const { return total_; }
    std::uint64_t max() const { return max_; }

    // The upper edge of the bucket holding the <q>-quantile sample (0 if empty).
    std::uint64_t quantile(double q) const {
        if (total_ == 0) return 0;
        const std::uint64_t rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(q * static_cast<double>(total_) + 0.5));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::min(upper(i), max_);
        }
        return max_;
    }

private:
    static std::size_t index(std::uint64_t v) {
        if (v < kSub) return static_cast<std::size_t>(v);
        const int e = 63 - std::countl_zero(v);
        return static_cast<std::size_t>((e - kSubBits + 1) * kSub + ((v >> (e - kSubBits)) - kSub));
    }
    static std::uint64_t upper(std::size_t i) {
        if (i < kSub) return i;
        const int e = static_cast<int>(i / kSub) + kSubBits - 1;
        const std::uint64_t m = i % kSub + kSub;
        return ((m + 1) << (e - kSubBits)) - 1;
    }

    std::vector<std::uint64_t> counts_;
    std::uint64_t total_ = 0;
    std::uint64_t max_ = 0;
};

std::uint64_t read_cpu_ns(const std::vector<int>& pids) {
    std::uint64_t sum = 0;
    for (int pid : pids) {
        const std::string dir = "/proc/" + std::to_string(pid) + "/task";
        DIR* d = opendir(dir.c_str());
        if (!d) continue;
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            std::ifstream f(dir + "/" + e->d_name + "/schedstat");
            std::uint64_t ns = 0;
            if (f >> ns) sum += ns;
        }
        closedir(d);
    }
    return sum;
}

std::uint64_t read_rss_kib(const std::vector<int>& pids) {
    std::uint64_t sum = 0;
    for (int pid : pids) {
        std::ifstream f("/proc/" + std::to_string(pid) + "/status");
        std::string line;
        while (std::getline(f, line)) {
            if (line.rfind("VmRSS:", 0) == 0) {
                sum += std::strtoull(line.c_str() + 6, nullptr, 10);
                break;
            }
        }
    }
    return sum;
}

class Loadgen;

enum class ConnState { Connecting, Handshaking, Open, Closing, Done };

struct Conn {
    Loadgen* gen = nullptr;
    unsigned id = 0;
    bufferevent* bev = nullptr;
    ConnState state = ConnState::Connecting;
    std::string expected_accept;
    std::uint64_t next_seq = 0;
    // Messages in flight, oldest first: (sequence number, send timestamp).
    std::vector<std::pair<std::uint64_t, std::uint64_t>> inflight;
    std::size_t inflight_head = 0;
    std::vector<std::uint8_t> fragments;  // a fragmented message being reassembled
    std::uint8_t fragment_opcode = 0;
    event* close_timer = nullptr;
    SSL_SESSION* session = nullptr;  // --resume: offered on the next connect
    std::uint64_t reconnect_ns = 0;  // storm: when the server's close was seen (0 = first connect)
};

class Loadgen {
public:
    explicit Loadgen(const Options& o)
        : opt_(o), rng_(o.seed), base_(event_base_new()) {
        if (opt_.mode == Mode::Echo) {
            // Filler source: message <seq> of connection <id> carries
            // filler_[offset(id, seq) .. + size-16), so each message differs.
            filler_.resize(opt_.size - 16 + kFillerSpan);
            for (auto& b : filler_) b = static_cast<std::uint8_t>(rng_.next() >> 56);
            frame_.resize(kMaxHeader + opt_.size);
        }
        if (opt_.tls) {
            tls_ = SSL_CTX_new(TLS_client_method());
            // A benchmark against a throwaway self-signed certificate: nothing to verify.
            SSL_CTX_set_verify(tls_, SSL_VERIFY_NONE, nullptr);
            SSL_CTX_set_mode(tls_, SSL_MODE_RELEASE_BUFFERS);
            // No client-side cache: --resume keeps one session per connection
            // itself, the latest one the server gave it (the new-session
            // callback is where OpenSSL hands over TLS 1.3 tickets; OpenSSL's
            // client uses a TLS 1.3 ticket once), and offers it next time.
            if (opt_.resume) {
                SSL_CTX_set_session_cache_mode(tls_, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
                SSL_CTX_sess_set_new_cb(tls_, &Loadgen::on_new_session);
            } else {
                SSL_CTX_set_session_cache_mode(tls_, SSL_SESS_CACHE_OFF);
            }
        }
        addr_.sin_family = AF_INET;
        addr_.sin_port = htons(static_cast<std::uint16_t>(opt_.port));
        inet_pton(AF_INET, opt_.host.c_str(), &addr_.sin_addr);
    }
    ~Loadgen() {
        for (auto& c : conns_) {
            release(c.get());
            if (c->session) SSL_SESSION_free(c->session);
        }
        if (tick_) event_free(tick_);
        event_base_free(base_);
        if (tls_) SSL_CTX_free(tls_);
    }

    int run();

private:
    static constexpr std::size_t kFillerSpan = 4096;

    // --- connection life cycle ---
    void open(Conn* c);
    void release(Conn* c);
    void fail(Conn* c, const char* why);
    void on_open(Conn* c);
    void on_closed(Conn* c);
    void send_request(Conn* c);
    bool read_response(Conn* c, evbuffer* in);
    bool read_frames(Conn* c, evbuffer* in);
    void on_message(Conn* c, std::uint8_t opcode, const std::uint8_t* p, std::size_t n);
    void send_control(Conn* c, std::uint8_t opcode, const std::uint8_t* p, std::size_t n);
    void send_message(Conn* c);
    bool may_send() const;

    static void read_cb(bufferevent* bev, void* arg);
    static void event_cb(bufferevent* bev, short what, void* arg);
    static void close_timeout_cb(evutil_socket_t, short, void* arg);
    static void tick_cb(evutil_socket_t, short, void* arg);
    static void reopen_cb(evutil_socket_t, short, void* arg);
    // Our own index: libevent's bufferevent_openssl uses the SSL's app data.
    static int conn_index() {
        static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
        return index;
    }
    static int on_new_session(SSL* ssl, SSL_SESSION* session) {
        auto* c = static_cast<Conn*>(SSL_get_ex_data(ssl, conn_index()));
        if (c == nullptr) return 0;
        if (c->session) SSL_SESSION_free(c->session);
        c->session = session;  // keeps OpenSSL's reference
        return 1;
    }

    // --- phases ---
    void tick();
    void begin_measure();
    void finish();
    void report() const;
    std::size_t filler_offset(unsigned id, std::uint64_t seq) const {
        return static_cast<std::size_t>((seq * 2654435761ull + id * 40503ull) % kFillerSpan);
    }

    Options opt_;
    Rng rng_;
    event_base* base_;
    SSL_CTX* tls_ = nullptr;  // --tls
    std::string tls_version_;  // what the first TLS connection negotiated
    std::string tls_cipher_;
    sockaddr_in addr_{};
    event* tick_ = nullptr;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<std::uint8_t> filler_;
    std::vector<std::uint8_t> frame_;

    std::uint64_t launch_ns_ = 0;
    std::uint64_t measure_start_ns_ = 0;
    std::uint64_t measure_end_ns_ = 0;
    bool measuring_ = false;
    bool finished_ = false;
    bool stop_sending_ = false;

    unsigned opened_ = 0;      // idle/echo: sessions that completed the handshake
    unsigned attempted_ = 0;   // idle: sessions started so far
    unsigned connecting_ = 0;  // idle: handshakes in progress
    std::uint64_t all_open_ns_ = 0;
    std::uint64_t next_ping_index_ = 0;

    // Counters of the measured window.
    std::uint64_t sent_ = 0;
    std::uint64_t messages_ = 0;
    std::uint64_t bytes_ = 0;
    std::uint64_t mismatches_ = 0;
    std::uint64_t errors_ = 0;
    std::uint64_t handshakes_ = 0;
    std::uint64_t pings_sent_ = 0;
    std::uint64_t pongs_received_ = 0;
    std::uint64_t pings_answered_ = 0;
    std::string first_error_;
    Histogram latency_;
    std::uint64_t tls_handshakes_ = 0;   // measured window
    std::uint64_t resumed_ = 0;          // of those, resumed
    std::uint64_t reconnects_ = 0;       // storm: completed reconnects
    std::uint64_t failed_reconnects_ = 0;
    std::vector<std::uint32_t> buckets_;  // storm: reconnects per 100 ms of the window

    std::uint64_t cpu_start_ = 0;
    std::uint64_t cpu_end_ = 0;
    std::uint64_t rss_before_ = 0;
    std::uint64_t rss_after_ = 0;
};

void Loadgen::open(Conn* c) {
    if (tls_) {
        SSL* ssl = SSL_new(tls_);
        SSL_set_tlsext_host_name(ssl, opt_.sni.c_str());
        SSL_set_ex_data(ssl, conn_index(), c);
        if (opt_.resume && c->session) SSL_set_session(ssl, c->session);
        // BEV_EVENT_CONNECTED then means "TLS handshake complete".
        c->bev = bufferevent_openssl_socket_new(base_, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        // A server that closes TCP without close_notify has still closed (EOF, not an error).
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(base_, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    c->state = ConnState::Connecting;
    c->next_seq = 0;
    c->inflight.assign(opt_.window ? opt_.window : 1, {0, 0});
    c->inflight_head = 0;
    c->fragments.clear();
    bufferevent_setcb(c->bev, read_cb, nullptr, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(c->bev, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_) < 0) {
        fail(c, "connect failed");
    }
}

void Loadgen::release(Conn* c) {
    if (c->close_timer) {
        event_free(c->close_timer);
        c->close_timer = nullptr;
    }
    if (c->bev) {
        // SSL_free of a connection that sent no close_notify marks its
        // session not resumable (ssl_clear_bad_session); the session kept for
        // --resume is that very object, so the connection counts as shut down.
        if (tls_ && opt_.resume) {
            SSL_set_shutdown(bufferevent_openssl_get_ssl(c->bev), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        }
        bufferevent_free(c->bev);
        c->bev = nullptr;
    }
}

void Loadgen::fail(Conn* c, const char* why) {
    if (finished_) return;
    if (opt_.mode == Mode::Storm && measuring_) {
        // The server closed an open session: reconnect at once. A reconnect
        // that fails is retried after 100 ms (the latency keeps counting).
        const bool was_open = c->state == ConnState::Open;
        release(c);
        c->state = ConnState::Done;
        timeval tv{0, 0};
        if (was_open) {
            c->reconnect_ns = now_ns();
        } else {
            ++failed_reconnects_;
            if (first_error_.empty()) first_error_ = why;
            tv.tv_usec = 100000;
        }
        event_base_once(base_, -1, EV_TIMEOUT, reopen_cb, c, &tv);
        return;
    }
    const bool counted = c->state != ConnState::Done;
    const bool was_connecting = c->state == ConnState::Connecting || c->state == ConnState::Handshaking;
    release(c);
    c->state = ConnState::Done;
    if (counted) {
        ++errors_;
        if (first_error_.empty()) first_error_ = why;
    }
    if (opt_.mode == Mode::Handshake) {
        // Keep the connector busy; a timer (1 ms) so an immediate connect
        // failure cannot recurse.
        const timeval tv{0, 1000};
        event_base_once(base_, -1, EV_TIMEOUT, reopen_cb, c, &tv);
    } else if (was_connecting && counted) {
        --connecting_;
        if (opt_.mode == Mode::Idle || opt_.mode == Mode::Storm) tick();
    }
}

void Loadgen::send_request(Conn* c) {
    unsigned char raw[16];
    const std::uint64_t a = rng_.next(), b = rng_.next();
    std::memcpy(raw, &a, 8);
    std::memcpy(raw + 8, &b, 8);
    const std::string key = base64(raw, sizeof raw);
    c->expected_accept = accept_key(key);
    const std::string path = opt_.mode == Mode::Storm ? opt_.path + "?k=" + std::to_string(c->id) : opt_.path;
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + opt_.host + ":" + std::to_string(opt_.port) +
                      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                      "\r\nSec-WebSocket-Version: 13\r\n\r\n";
    bufferevent_write(c->bev, req.data(), req.size());
    c->state = ConnState::Handshaking;
}

// Checks the 101 (RFC 6455 §4.1 client requirements 1-4); false on failure.
bool Loadgen::read_response(Conn* c, evbuffer* in) {
    const evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, nullptr);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > 16384) {
            fail(c, "response head too large");
            return false;
        }
        return true;
    }
    const std::size_t len = static_cast<std::size_t>(end.pos) + 4;
    const std::string_view head(reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(len))), len);
    if (head.substr(0, 13) != "HTTP/1.1 101 ") {
        fail(c, "status is not 101");
        return false;
    }
    if (find_header(head, "Sec-WebSocket-Accept") != c->expected_accept) {
        fail(c, "bad Sec-WebSocket-Accept");
        return false;
    }
    evbuffer_drain(in, len);
    on_open(c);
    return c->state == ConnState::Open || c->state == ConnState::Closing;
}

void Loadgen::on_open(Conn* c) {
    c->state = ConnState::Open;
    switch (opt_.mode) {
    case Mode::Echo:
        ++opened_;
        for (unsigned i = 0; i < opt_.window && may_send(); ++i) send_message(c);
        if (opened_ == conns_.size() && !measuring_ && !finished_) all_open_ns_ = now_ns();
        break;
    case Mode::Handshake: {
        if (opt_.vanish) {
            on_closed(c);
            break;
        }
        // Close handshake: code 1000 (§7.4.1), then wait for the echo and the server's TCP close.
        const std::uint8_t code[2] = {0x03, 0xE8};
        send_control(c, kClose, code, 2);
        c->state = ConnState::Closing;
        break;
    }
    case Mode::Idle:
        ++opened_;
        --connecting_;
        tick();
        break;
    case Mode::Storm:
        if (c->reconnect_ns == 0) {
            ++opened_;
            --connecting_;
            tick();
        } else if (measuring_) {
            const std::uint64_t now = now_ns();
            ++reconnects_;
            latency_.record(now - c->reconnect_ns);
            const std::size_t bucket = static_cast<std::size_t>((now - measure_start_ns_) / 100000000ull);
            if (bucket >= buckets_.size()) buckets_.resize(bucket + 1, 0);
            ++buckets_[bucket];
            c->reconnect_ns = 0;
        }
        break;
    }
}

bool Loadgen::may_send() const {
    if (stop_sending_ || finished_) return false;
    return opt_.messages == 0 || !measuring_ || sent_ < opt_.messages;
}

void Loadgen::send_message(Conn* c) {
    const std::size_t size = opt_.size;
    std::uint8_t mask[4];
    const std::uint64_t r = rng_.next();
    std::memcpy(mask, &r, 4);
    std::uint8_t* frame = frame_.data();
    const std::size_t h = encode_header(frame, kBinary, size, mask);
    std::uint8_t* payload = frame + h;
    const std::uint64_t seq = c->next_seq++;
    const std::uint64_t ts = now_ns();
    std::memcpy(payload, &ts, 8);
    std::memcpy(payload + 8, &seq, 8);
    std::memcpy(payload + 16, filler_.data() + filler_offset(c->id, seq), size - 16);
    apply_mask(payload, size, mask);
    bufferevent_write(c->bev, frame, h + size);
    c->inflight[seq % c->inflight.size()] = {seq, ts};
    if (measuring_) ++sent_;
}

void Loadgen::send_control(Conn* c, std::uint8_t opcode, const std::uint8_t* p, std::size_t n) {
    std::uint8_t buf[kMaxHeader + 125];
    std::uint8_t mask[4];
    const std::uint64_t r = rng_.next();
    std::memcpy(mask, &r, 4);
    const std::size_t h = encode_header(buf, opcode, n, mask);
    std::memcpy(buf + h, p, n);
    apply_mask(buf + h, n, mask);
    bufferevent_write(c->bev, buf, h + n);
}

// Parses every complete server frame (unmasked, §5.1); false when <c> failed.
bool Loadgen::read_frames(Conn* c, evbuffer* in) {
    for (;;) {
        const std::size_t avail = evbuffer_get_length(in);
        std::uint8_t raw[kMaxHeader];
        const std::size_t peek = std::min(avail, kMaxHeader);
        evbuffer_copyout(in, raw, peek);
        FrameHeader fh;
        const int r = decode_header(raw, peek, fh);
        if (r < 0 || fh.masked || fh.rsv != 0 || fh.length > (64ull << 20)) {
            fail(c, "bad frame from server");
            return false;
        }
        if (r == 0) return true;
        const std::size_t total = fh.header_length + fh.length;
        if (avail < total) return true;
        const std::uint8_t* frame = evbuffer_pullup(in, static_cast<ev_ssize_t>(total));
        const std::uint8_t* payload = frame + fh.header_length;
        const std::size_t n = fh.length;
        if (fh.opcode >= kClose) {
            on_message(c, fh.opcode, payload, n);
        } else if (fh.fin && fh.opcode != kContinuation && c->fragments.empty()) {
            on_message(c, fh.opcode, payload, n);
        } else {
            if (fh.opcode != kContinuation) c->fragment_opcode = fh.opcode;
            c->fragments.insert(c->fragments.end(), payload, payload + n);
            if (fh.fin) {
                std::vector<std::uint8_t> whole;
                whole.swap(c->fragments);
                on_message(c, c->fragment_opcode, whole.data(), whole.size());
            }
        }
        if (c->state == ConnState::Done || !c->bev) return false;
        evbuffer_drain(in, total);
    }
}

void Loadgen::on_message(Conn* c, std::uint8_t opcode, const std::uint8_t* p, std::size_t n) {
    switch (opcode) {
    case kPing:
        send_control(c, kPong, p, std::min<std::size_t>(n, 125));
        ++pings_answered_;
        return;
    case kPong:
        ++pongs_received_;
        return;
    case kClose:
        if (c->state == ConnState::Closing) {
            // Our close was answered: wait (bounded) for the server to close TCP.
            c->close_timer = evtimer_new(base_, close_timeout_cb, c);
            const timeval tv{2, 0};
            evtimer_add(c->close_timer, &tv);
            bufferevent_disable(c->bev, EV_WRITE);
            return;
        }
        send_control(c, kClose, p, std::min<std::size_t>(n, 125));
        fail(c, "server closed the session");
        return;
    default:
        break;
    }
    if (opt_.mode != Mode::Echo || c->state != ConnState::Open) return;
    // The echo must be the oldest message in flight, byte for byte.
    const std::uint64_t seq = c->inflight_head;
    const auto expected = c->inflight[seq % c->inflight.size()];
    ++c->inflight_head;
    const std::uint64_t now = now_ns();
    bool ok = opcode == kBinary && n == opt_.size && seq < c->next_seq;
    if (ok) {
        std::uint64_t ts, got_seq;
        std::memcpy(&ts, p, 8);
        std::memcpy(&got_seq, p + 8, 8);
        ok = ts == expected.second && got_seq == expected.first && got_seq == seq &&
             std::memcmp(p + 16, filler_.data() + filler_offset(c->id, seq), n - 16) == 0;
    }
    if (measuring_) {
        ++messages_;
        bytes_ += n;
        if (!ok) ++mismatches_;
        else latency_.record(now - expected.second);
    }
    if (!ok && first_error_.empty()) first_error_ = "echo mismatch";
    if (may_send()) send_message(c);
    else if (opt_.messages && measuring_ && messages_ >= sent_) finish();
}

void Loadgen::on_closed(Conn* c) {
    // Handshake mode: the cycle completed (connect, upgrade, close handshake
    // and the server's TCP close; with --vanish: connect and upgrade, and
    // release() closes TCP without a close frame).
    release(c);
    c->state = ConnState::Done;
    if (measuring_) ++handshakes_;
    if (!finished_) open(c);
}

void Loadgen::read_cb(bufferevent* bev, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    Loadgen* g = c->gen;
    evbuffer* in = bufferevent_get_input(bev);
    if (c->state == ConnState::Handshaking && !g->read_response(c, in)) return;
    if (c->state == ConnState::Open || c->state == ConnState::Closing) g->read_frames(c, in);
}

void Loadgen::event_cb(bufferevent* bev, short what, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    Loadgen* g = c->gen;
    if (what & BEV_EVENT_CONNECTED) {
        const int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (g->tls_ && g->tls_version_.empty()) {
            const SSL* ssl = bufferevent_openssl_get_ssl(bev);
            g->tls_version_ = SSL_get_version(ssl);
            g->tls_cipher_ = SSL_get_cipher_name(ssl);
        }
        if (g->tls_ && g->measuring_) {
            ++g->tls_handshakes_;
            if (SSL_session_reused(bufferevent_openssl_get_ssl(bev))) ++g->resumed_;
        }
        g->send_request(c);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (c->state == ConnState::Closing && c->close_timer) return g->on_closed(c);
        if (g->tls_ && (what & BEV_EVENT_ERROR)) {
            if (const unsigned long e = bufferevent_get_openssl_error(bev)) {
                char text[256];
                ERR_error_string_n(e, text, sizeof text);
                g->fail(c, text);
                return;
            }
        }
        g->fail(c, (what & BEV_EVENT_EOF) ? "connection closed by server" : "socket error");
    }
}

void Loadgen::close_timeout_cb(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    c->gen->fail(c, "server did not close TCP within 2 s of the close handshake");
}

void Loadgen::tick_cb(evutil_socket_t, short, void* arg) { static_cast<Loadgen*>(arg)->tick(); }

void Loadgen::reopen_cb(evutil_socket_t, short, void* arg) {
    auto* c = static_cast<Conn*>(arg);
    if (!c->gen->finished_ && c->state == ConnState::Done) c->gen->open(c);
}

// Drives the phases; runs every 10 ms and on idle-mode progress.
void Loadgen::tick() {
    if (finished_) return;
    const std::uint64_t now = now_ns();
    const auto secs = [](double s) { return static_cast<std::uint64_t>(s * 1e9); };

    if (opt_.mode == Mode::Storm) {
        while (attempted_ < conns_.size() && connecting_ < opt_.connectors) {
            Conn* c = conns_[attempted_++].get();
            ++connecting_;
            open(c);
            if (finished_) return;
        }
        const bool all = attempted_ == conns_.size() && connecting_ == 0;
        // Opening is bounded: after 120 s the window starts with what is open.
        if (!measuring_ && (all || now >= launch_ns_ + secs(120))) {
            all_open_ns_ = now;
            std::printf("{\"event\":\"all_open\",\"opened\":%u,\"errors\":%llu}\n", opened_,
                        static_cast<unsigned long long>(errors_));
            std::fflush(stdout);
            begin_measure();
        }
    } else if (opt_.mode == Mode::Idle) {
        while (attempted_ < conns_.size() && connecting_ < opt_.connectors) {
            Conn* c = conns_[attempted_++].get();
            ++connecting_;
            open(c);
            if (finished_) return;
        }
        if (!all_open_ns_ && attempted_ == conns_.size() && connecting_ == 0) all_open_ns_ = now;
        if (all_open_ns_ && !measuring_ && now >= all_open_ns_ + secs(opt_.settle)) {
            rss_after_ = read_rss_kib(opt_.rss_pids);
            begin_measure();
        }
        if (measuring_ && opt_.ping_interval > 0 && now > measure_start_ns_) {
            // Spread the pings: each 10 ms tick pings its share of the sessions.
            const double per_tick = static_cast<double>(conns_.size()) * 0.01 / opt_.ping_interval;
            const std::uint64_t target = static_cast<std::uint64_t>(
                static_cast<double>(now - measure_start_ns_) / 1e7 * per_tick);
            for (; next_ping_index_ < target; ++next_ping_index_) {
                Conn* c = conns_[next_ping_index_ % conns_.size()].get();
                if (c->state != ConnState::Open) continue;
                const std::uint8_t payload[4] = {'b', 'e', 'a', 't'};
                send_control(c, kPing, payload, 4);
                ++pings_sent_;
            }
        }
        // Opening is bounded too: give up on stragglers after --duration.
        if (!measuring_ && now >= launch_ns_ + secs(opt_.duration + 30)) {
            rss_after_ = read_rss_kib(opt_.rss_pids);
            begin_measure();
        }
    } else if (opt_.mode == Mode::Echo) {
        const bool ready = all_open_ns_ != 0 || now >= launch_ns_ + secs(10);
        if (!all_open_ns_ && ready) all_open_ns_ = now;
        if (!measuring_ && ready && now >= all_open_ns_ + secs(opt_.warmup)) begin_measure();
    } else if (!measuring_ && now >= launch_ns_ + secs(opt_.warmup)) {
        begin_measure();
    }

    if (measuring_ && now >= measure_start_ns_ + secs(opt_.duration)) finish();
}

void Loadgen::begin_measure() {
    measuring_ = true;
    messages_ = bytes_ = mismatches_ = handshakes_ = sent_ = 0;
    tls_handshakes_ = resumed_ = 0;
    latency_.clear();
    cpu_start_ = read_cpu_ns(opt_.cpu_pids);
    measure_start_ns_ = now_ns();
}

void Loadgen::finish() {
    if (finished_) return;
    measure_end_ns_ = now_ns();
    cpu_end_ = read_cpu_ns(opt_.cpu_pids);
    finished_ = true;
    event_base_loopbreak(base_);
}

int Loadgen::run() {
    conns_.resize(opt_.mode == Mode::Handshake ? opt_.connectors : opt_.connections);
    for (unsigned i = 0; i < conns_.size(); ++i) {
        conns_[i] = std::make_unique<Conn>();
        conns_[i]->gen = this;
        conns_[i]->id = i;
    }
    rss_before_ = read_rss_kib(opt_.rss_pids);
    launch_ns_ = now_ns();
    if (opt_.mode != Mode::Idle && opt_.mode != Mode::Storm) {
        for (auto& c : conns_) open(c.get());
    }
    tick_ = event_new(base_, -1, EV_PERSIST, tick_cb, this);
    const timeval tv{0, 10000};
    event_add(tick_, &tv);
    tick();
    event_base_dispatch(base_);
    if (!finished_) finish();
    report();
    return (errors_ || mismatches_) ? 1 : 0;
}

void Loadgen::report() const {
    const double elapsed = static_cast<double>(measure_end_ns_ - measure_start_ns_) / 1e9;
    unsigned open_sessions = 0;
    for (const auto& c : conns_) open_sessions += c->state == ConnState::Open;
    const std::uint64_t cpu_ns = cpu_end_ - cpu_start_;
    std::uint64_t ops = 0;
    const char* mode = "echo";
    switch (opt_.mode) {
    case Mode::Echo: ops = messages_; break;
    case Mode::Handshake: ops = handshakes_; mode = "handshake"; break;
    case Mode::Idle: ops = 0; mode = "idle"; break;
    case Mode::Storm: ops = reconnects_; mode = "storm"; break;
    }
    std::ostringstream o;
    o.setf(std::ios::fixed);
    o.precision(3);
    const auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    std::string err = first_error_;
    for (auto& ch : err) if (ch == '"' || ch == '\\') ch = '\'';
    o << "{\"mode\":\"" << mode << "\",\"connections\":" << conns_.size() << ",\"size\":" << opt_.size
      << ",\"window\":" << opt_.window << ",\"elapsed_s\":" << elapsed << ",\"messages\":" << messages_
      << ",\"bytes\":" << bytes_ << ",\"mismatches\":" << mismatches_ << ",\"errors\":" << errors_
      << ",\"first_error\":\"" << err << "\""
      << ",\"msgs_per_s\":" << (elapsed > 0 ? static_cast<double>(messages_) / elapsed : 0)
      << ",\"mb_per_s\":" << (elapsed > 0 ? static_cast<double>(bytes_) / elapsed / 1e6 : 0)
      << ",\"p50_us\":" << us(latency_.quantile(0.50)) << ",\"p99_us\":" << us(latency_.quantile(0.99))
      << ",\"p999_us\":" << us(latency_.quantile(0.999)) << ",\"max_us\":" << us(latency_.max())
      << ",\"handshakes\":" << handshakes_
      << ",\"handshakes_per_s\":" << (elapsed > 0 ? static_cast<double>(handshakes_) / elapsed : 0)
      << ",\"open_sessions\":" << open_sessions << ",\"pings_sent\":" << pings_sent_
      << ",\"pongs_received\":" << pongs_received_ << ",\"pings_answered\":" << pings_answered_;
    if (!opt_.cpu_pids.empty()) {
        o << ",\"cpu_ns\":" << cpu_ns;
        if (ops) o << ",\"cpu_us_per_op\":" << static_cast<double>(cpu_ns) / 1000.0 / static_cast<double>(ops);
    }
    if (!opt_.rss_pids.empty()) {
        o << ",\"rss_before_kib\":" << rss_before_ << ",\"rss_after_kib\":" << rss_after_;
        if (opt_.mode == Mode::Idle && opened_)
            o << ",\"rss_kib_per_session\":"
              << (static_cast<double>(rss_after_) - static_cast<double>(rss_before_)) / opened_;
    }
    if (opt_.tls) {
        o << ",\"tls_handshakes\":" << tls_handshakes_ << ",\"resumed\":" << resumed_;
        if (tls_handshakes_) o << ",\"resumed_share\":" << static_cast<double>(resumed_) / static_cast<double>(tls_handshakes_);
    }
    if (opt_.mode == Mode::Storm) {
        std::uint64_t peak = 0;
        for (std::size_t i = 0; i < buckets_.size(); ++i) {
            std::uint64_t window = 0;
            for (std::size_t j = i; j < std::min(buckets_.size(), i + 10); ++j) window += buckets_[j];
            peak = std::max(peak, window);
        }
        unsigned closed = 0;
        for (const auto& c : conns_) closed += c->state != ConnState::Open;
        o << ",\"reconnects\":" << reconnects_ << ",\"failed_reconnects\":" << failed_reconnects_
          << ",\"peak_handshakes_per_s\":" << peak << ",\"still_closed\":" << closed;
    }
    if (opt_.tls) o << ",\"tls_version\":\"" << tls_version_ << "\",\"tls_cipher\":\"" << tls_cipher_ << "\"";
    o << ",\"opened\":" << opened_ << "}";
    std::printf("%s\n", o.str().c_str());
    std::fflush(stdout);
}

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "ws_loadgen: %s\nusage: ws_loadgen --port PORT [--host 127.0.0.1] [--path /]\n"
                 "  [--mode echo|handshake|idle|storm] [--connections N] [--connectors N] [--size BYTES>=16]\n"
                 "  [--window W] [--duration S] [--warmup S] [--messages COUNT] [--settle S]\n"
                 "  [--ping-interval S] [--cpu-pid P[,P..]] [--rss-pid P[,P..]] [--seed N]\n"
                 "  [--tls] [--sni NAME] [--resume] [--vanish]  (--mode storm: see the top of ws_loadgen.cpp)\n",
                 why);
    std::exit(2);
}

std::vector<int> parse_pids(const std::string& s) {
    std::vector<int> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ','))
        if (!item.empty()) out.push_back(std::atoi(item.c_str()));
    return out;
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--tls") {
            o.tls = true;
            continue;
        }
        if (a == "--resume") {
            o.resume = true;
            continue;
        }
        if (a == "--vanish") {
            o.vanish = true;
            continue;
        }
        if (i + 1 >= argc) usage(("missing value for " + a).c_str());
        const std::string v = argv[++i];
        if (a == "--host") o.host = v;
        else if (a == "--port") o.port = std::atoi(v.c_str());
        else if (a == "--path") o.path = v;
        else if (a == "--mode") {
            if (v == "echo") o.mode = Mode::Echo;
            else if (v == "handshake") o.mode = Mode::Handshake;
            else if (v == "idle") o.mode = Mode::Idle;
            else if (v == "storm") o.mode = Mode::Storm;
            else usage("unknown mode");
        } else if (a == "--connections") o.connections = static_cast<unsigned>(std::atoi(v.c_str()));
        else if (a == "--connectors") o.connectors = static_cast<unsigned>(std::atoi(v.c_str()));
        else if (a == "--size") o.size = std::strtoull(v.c_str(), nullptr, 10);
        else if (a == "--window") o.window = static_cast<unsigned>(std::atoi(v.c_str()));
        else if (a == "--duration") o.duration = std::atof(v.c_str());
        else if (a == "--warmup") o.warmup = std::atof(v.c_str());
        else if (a == "--settle") o.settle = std::atof(v.c_str());
        else if (a == "--ping-interval") o.ping_interval = std::atof(v.c_str());
        else if (a == "--messages") o.messages = std::strtoull(v.c_str(), nullptr, 10);
        else if (a == "--seed") o.seed = std::strtoull(v.c_str(), nullptr, 10);
        else if (a == "--cpu-pid") o.cpu_pids = parse_pids(v);
        else if (a == "--rss-pid") o.rss_pids = parse_pids(v);
        else if (a == "--sni") o.sni = v;
        else usage(("unknown option " + a).c_str());
    }
    if (o.port <= 0 || o.port > 65535) usage("--port is required");
    if (o.size < 16) usage("--size must be at least 16 (timestamp + sequence number)");
    if (o.window == 0 || o.connections == 0 || o.connectors == 0) usage("counts must be positive");
    if (o.duration <= 0) usage("--duration must be positive");
    if (o.vanish && o.mode != Mode::Handshake) usage("--vanish applies to --mode handshake");
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);
    const Options opt = parse(argc, argv);
    Loadgen gen(opt);
    return gen.run();
}
