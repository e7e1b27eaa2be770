#include "runtime/health.h"

#include <unistd.h>

#include <cstring>
#include <random>

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "net/stream_socket.h"
#include "protocol/websocket.h"

namespace runtime {

ProbeVerdict judge_http_probe(std::string_view received) {
    http1::ResponseParser parser;
    http1::ResponseHead head;
    http1::Result result = parser.parse(received, head);
    if (result.status == http1::Status::NeedMore) return ProbeVerdict::NeedMore;
    if (result.status == http1::Status::Error) return ProbeVerdict::Unhealthy;
    return head.status >= 200 && head.status < 400 ? ProbeVerdict::Healthy : ProbeVerdict::Unhealthy;
}

ProbeVerdict judge_websocket_probe(std::string_view received, std::string_view key) {
    http1::ResponseParser parser;
    http1::ResponseHead head;
    http1::Result result = parser.parse(received, head);
    if (result.status == http1::Status::NeedMore) return ProbeVerdict::NeedMore;
    if (result.status == http1::Status::Error || !ws::check_upgrade_response(head, key).ok) {
        return ProbeVerdict::Unhealthy;
    }
    // After the 101: frames from the server; a pong answers our ping. Other
    // frames (a greeting, say) are skipped.
    std::string_view frames = received.substr(result.consumed);
    for (;;) {
        auto bytes = std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(frames.data()), frames.size());
        ws::DecodeResult frame = ws::decode_frame_header(bytes);
        if (frame.status == ws::DecodeStatus::NeedMore) return ProbeVerdict::NeedMore;
        if (frame.status == ws::DecodeStatus::Error || frame.header.masked) return ProbeVerdict::Unhealthy;
        std::uint64_t total = frame.header.header_len + frame.header.payload_len;
        if (frame.header.opcode == static_cast<std::uint8_t>(ws::Opcode::Pong)) return ProbeVerdict::Healthy;
        if (frame.header.opcode == static_cast<std::uint8_t>(ws::Opcode::Close)) return ProbeVerdict::Unhealthy;
        if (total > frames.size()) return ProbeVerdict::NeedMore;
        frames.remove_prefix(static_cast<std::size_t>(total));
    }
}

struct HealthChecker::Probe {
    HealthChecker* owner = nullptr;
    const config::Pool* pool = nullptr;
    const config::Backend* backend = nullptr;
    std::shared_ptr<BackendState> state;
    event* tick = nullptr;     // next probe
    event* deadline = nullptr; // probe timeout
    bufferevent* bev = nullptr;
    std::string key;           // websocket probes: our Sec-WebSocket-Key
    unsigned successes = 0;    // consecutive
    unsigned failures = 0;     // consecutive

    ~Probe() {
        if (bev) bufferevent_free(bev);
        if (tick) event_free(tick);
        if (deadline) event_free(deadline);
    }
};

HealthChecker::HealthChecker(event_base* base, obs::ErrorLog& log, std::function<void()> on_transition)
    : base_(base), log_(log), on_transition_(std::move(on_transition)) {}

HealthChecker::~HealthChecker() = default;

void HealthChecker::configure(std::shared_ptr<const Generation> generation) {
    probes_.clear();
    generation_ = std::move(generation);
    std::mt19937_64 rng(std::random_device{}());
    for (const PoolRuntime& pool : generation_->pools()) {
        const config::HealthCheck& health = pool.config->health;
        for (std::size_t i = 0; i < pool.config->backends.size(); ++i) {
            if (health.type == config::HealthType::None) {
                // No active checks: only passive ones decide.
                pool.states[i]->healthy.store(true, std::memory_order_relaxed);
                continue;
            }
            auto probe = std::make_unique<Probe>();
            probe->owner = this;
            probe->pool = pool.config;
            probe->backend = &pool.config->backends[i];
            probe->state = pool.states[i];
            probe->tick = evtimer_new(base_, &HealthChecker::on_tick, probe.get());
            probe->deadline = evtimer_new(base_, &HealthChecker::on_timeout, probe.get());
            // Spread the first probes over one interval so they do not all fire together.
            std::int64_t first = std::uniform_int_distribution<std::int64_t>(0, health.interval.count())(rng);
            timeval tv{static_cast<time_t>(first / 1000), static_cast<suseconds_t>((first % 1000) * 1000)};
            evtimer_add(probe->tick, &tv);
            probes_.push_back(std::move(probe));
        }
    }
}

void HealthChecker::on_tick(evutil_socket_t, short, void* self) {
    auto* probe = static_cast<Probe*>(self);
    probe->owner->start_probe(*probe);
}

void HealthChecker::start_probe(Probe& probe) {
    const config::HealthCheck& health = probe.pool->health;
    const config::SocketAddress& address = probe.backend->address;
    // Without a descriptor this round cannot judge the back end: it is
    // skipped, not counted as a failure.
    const int fd = net::open_stream_socket(address.storage.ss_family);
    if (fd < 0) {
        schedule_probe(probe);
        return;
    }
    probe.bev = bufferevent_socket_new(base_, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!probe.bev) {
        close(fd);
        schedule_probe(probe);
        return;
    }
    bufferevent_setcb(probe.bev, &HealthChecker::on_read, nullptr, &HealthChecker::on_event, &probe);
    std::int64_t timeout = health.timeout.count();
    timeval tv{static_cast<time_t>(timeout / 1000), static_cast<suseconds_t>((timeout % 1000) * 1000)};
    evtimer_add(probe.deadline, &tv);
    // A connect() that fails at once is reported through on_event as well
    // as the return value: only the first may finish the probe.
    bufferevent* bev = probe.bev;
    if (bufferevent_socket_connect(bev, reinterpret_cast<const sockaddr*>(&address.storage),
                                   static_cast<int>(address.length)) < 0 &&
        probe.bev == bev) {
        finish_probe(probe, false, "connect failed");
    }
}

void HealthChecker::schedule_probe(Probe& probe) {
    std::int64_t interval = probe.pool->health.interval.count();
    timeval tv{static_cast<time_t>(interval / 1000), static_cast<suseconds_t>((interval % 1000) * 1000)};
    evtimer_add(probe.tick, &tv);
}

void HealthChecker::on_event(bufferevent*, short what, void* self) {
    auto* probe = static_cast<Probe*>(self);
    HealthChecker& checker = *probe->owner;
    const config::HealthCheck& health = probe->pool->health;
    if (what & BEV_EVENT_CONNECTED) {
        if (health.type == config::HealthType::Tcp) {
            checker.finish_probe(*probe, true, "connected");
            return;
        }
        std::string request = "GET " + health.path + " HTTP/1.1\r\nHost: " + probe->backend->address.text +
                              "\r\nUser-Agent: wsgate-health\r\n";
        if (health.type == config::HealthType::Http) {
            request += "Connection: close\r\n\r\n";
        } else {
            unsigned char nonce[16];
            RAND_bytes(nonce, sizeof nonce);
            unsigned char key[25];
            EVP_EncodeBlock(key, nonce, sizeof nonce);
            probe->key.assign(reinterpret_cast<const char*>(key), 24);
            request += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
                       probe->key + "\r\n\r\n";
            std::uint8_t ping[ws::kMaxControlFrame];
            std::size_t n = ws::encode_control_frame(ping, ws::Opcode::Ping, {},
                                                     std::array<std::uint8_t, 4>{0x12, 0x34, 0x56, 0x78});
            request.append(reinterpret_cast<const char*>(ping), n);
        }
        bufferevent_write(probe->bev, request.data(), request.size());
        bufferevent_enable(probe->bev, EV_READ);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        // EOF can come right after a complete answer; judge what we have.
        on_read(probe->bev, probe);
        if (probe->bev) checker.finish_probe(*probe, false, what & BEV_EVENT_EOF ? "closed" : "connect failed");
    }
}

void HealthChecker::on_read(bufferevent* bev, void* self) {
    auto* probe = static_cast<Probe*>(self);
    evbuffer* input = bufferevent_get_input(bev);
    std::size_t length = std::min<std::size_t>(evbuffer_get_length(input), 65536);
    std::string_view received(reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ev_ssize_t>(length))), length);
    ProbeVerdict verdict = probe->pool->health.type == config::HealthType::Http
                               ? judge_http_probe(received)
                               : judge_websocket_probe(received, probe->key);
    if (verdict == ProbeVerdict::NeedMore && length < 65536) return;
    probe->owner->finish_probe(*probe, verdict == ProbeVerdict::Healthy, "bad answer");
}

void HealthChecker::on_timeout(evutil_socket_t, short, void* self) {
    auto* probe = static_cast<Probe*>(self);
    probe->owner->finish_probe(*probe, false, "timeout");
}

void HealthChecker::finish_probe(Probe& probe, bool healthy, std::string_view why) {
    if (probe.bev) {
        bufferevent_free(probe.bev);
        probe.bev = nullptr;
    }
    evtimer_del(probe.deadline);
    const config::HealthCheck& health = probe.pool->health;
    bool was_up = probe.state->healthy.load(std::memory_order_relaxed);
    if (healthy) {
        probe.failures = 0;
        ++probe.successes;
        if (!was_up && probe.successes >= health.rise) {
            probe.state->healthy.store(true, std::memory_order_relaxed);
            // Back in service: forget passive failures too.
            probe.state->down_until_ms.store(0, std::memory_order_relaxed);
            probe.state->connect_failures.store(0, std::memory_order_relaxed);
            log_.log(obs::Level::Warn, "backend {} (pool {}) is up after {} successful checks", probe.backend->id,
                     probe.pool->name, probe.successes);
            on_transition_();
        }
    } else {
        probe.successes = 0;
        ++probe.failures;
        if (was_up && probe.failures >= health.fall) {
            probe.state->healthy.store(false, std::memory_order_relaxed);
            log_.log(obs::Level::Warn, "backend {} (pool {}) is down after {} failed checks (last: {})",
                     probe.backend->id, probe.pool->name, probe.failures, why);
            on_transition_();
        }
    }
    schedule_probe(probe);
}

}  // namespace runtime
