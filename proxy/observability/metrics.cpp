#include "observability/metrics.h"

#include <fmt/format.h>

namespace obs {

void WorkerMetrics::observe_handshake(std::uint64_t micros) {
    double seconds = static_cast<double>(micros) / 1e6;
    std::size_t i = 0;
    while (i < kHandshakeBuckets.size() && seconds > kHandshakeBuckets[i]) ++i;
    handshake_buckets[i].add();
    handshake_count.add();
    handshake_micros.add(micros);
}

void WorkerMetrics::session_ended(const SessionKey& key, int close_code, const std::string& close_by) {
    std::lock_guard lock(mutex);
    ++sessions[key];
    if (close_code != 0) ++closes[CloseKey{close_code, close_by}];
}

void WorkerMetrics::connection_opened(const std::string& listener) {
    connections_accepted.add();
    std::lock_guard lock(mutex);
    ++listener_active[listener];
}

void WorkerMetrics::connection_closed(const std::string& listener) {
    std::lock_guard lock(mutex);
    auto it = listener_active.find(listener);
    if (it != listener_active.end() && --it->second == 0) listener_active.erase(it);
}

std::string escape_label(const std::string& value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

namespace {

void header(std::string& out, const char* name, const char* type, const char* help) {
    fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

template <typename Get>
std::uint64_t sum(const std::vector<WorkerMetrics*>& workers, Get get) {
    std::uint64_t total = 0;
    for (WorkerMetrics* w : workers) total += get(*w);
    return total;
}

const char* dir_label(int i) { return i == 0 ? "client_to_backend" : "backend_to_client"; }

}  // namespace

std::string render_prometheus(const std::vector<WorkerMetrics*>& workers, const ProcessSnapshot& process) {
    std::string out;
    out.reserve(8192);
    auto line = [&out](std::string_view text) {
        out += text;
        out += '\n';
    };

    std::map<SessionKey, std::uint64_t> sessions;
    std::map<CloseKey, std::uint64_t> closes;
    std::map<std::string, std::int64_t> listener_active;
    for (WorkerMetrics* w : workers) {
        std::lock_guard lock(w->mutex);
        for (const auto& [k, v] : w->sessions) sessions[k] += v;
        for (const auto& [k, v] : w->closes) closes[k] += v;
        for (const auto& [k, v] : w->listener_active) listener_active[k] += v;
    }
    for (const std::string& listener : process.listeners) listener_active.try_emplace(listener, 0);

    header(out, "wsgate_connections_active", "gauge", "Client connections open now, per listener.");
    for (const auto& [listener, active] : listener_active) {
        line(fmt::format("wsgate_connections_active{{listener=\"{}\"}} {}", escape_label(listener), active));
    }
    header(out, "wsgate_connections_accepted_total", "counter", "Client connections accepted.");
    line(fmt::format("wsgate_connections_accepted_total {}", sum(workers, [](WorkerMetrics& w) { return w.connections_accepted.get(); })));
    header(out, "wsgate_connections_refused_total", "counter", "Client connections refused at accept by connection limits.");
    line(fmt::format("wsgate_connections_refused_total {}", sum(workers, [](WorkerMetrics& w) { return w.connections_refused.get(); })));

    struct PerDir {
        const char* name;
        const char* help;
        std::array<Counter, 2> WorkerMetrics::*member;
    };
    for (const PerDir& m : {PerDir{"wsgate_bytes_total", "Bytes relayed, per direction.", &WorkerMetrics::bytes},
                            PerDir{"wsgate_frames_total", "WebSocket frames relayed, per direction.", &WorkerMetrics::frames},
                            PerDir{"wsgate_messages_total", "WebSocket data messages relayed, per direction.",
                                   &WorkerMetrics::messages}}) {
        header(out, m.name, "counter", m.help);
        for (int d = 0; d < 2; ++d) {
            std::uint64_t value = sum(workers, [&m, d](WorkerMetrics& w) { return (w.*m.member)[d].get(); });
            line(fmt::format("{}{{direction=\"{}\"}} {}", m.name, dir_label(d), value));
        }
    }

    header(out, "wsgate_handshake_duration_seconds", "histogram", "Time from accept to the 101 relayed to the client.");
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= kHandshakeBuckets.size(); ++i) {
        cumulative += sum(workers, [i](WorkerMetrics& w) { return w.handshake_buckets[i].get(); });
        std::string le = i < kHandshakeBuckets.size() ? fmt::format("{}", kHandshakeBuckets[i]) : "+Inf";
        line(fmt::format("wsgate_handshake_duration_seconds_bucket{{le=\"{}\"}} {}", le, cumulative));
    }
    line(fmt::format("wsgate_handshake_duration_seconds_sum {}",
                     static_cast<double>(sum(workers, [](WorkerMetrics& w) { return w.handshake_micros.get(); })) / 1e6));
    line(fmt::format("wsgate_handshake_duration_seconds_count {}", sum(workers, [](WorkerMetrics& w) { return w.handshake_count.get(); })));

    header(out, "wsgate_sessions_total", "counter", "Finished sessions and refused requests, per pool, back end and status.");
    for (const auto& [k, v] : sessions) {
        line(fmt::format("wsgate_sessions_total{{pool=\"{}\",backend=\"{}\",status=\"{}\"}} {}", escape_label(k.pool),
                         escape_label(k.backend), k.status, v));
    }
    header(out, "wsgate_closes_total", "counter", "Tunnels closed, per close code and the side that closed.");
    for (const auto& [k, v] : closes) {
        line(fmt::format("wsgate_closes_total{{code=\"{}\",by=\"{}\"}} {}", k.code, escape_label(k.by), v));
    }

    struct Plain {
        const char* name;
        const char* help;
        Counter WorkerMetrics::*member;
    };
    for (const Plain& m : {Plain{"wsgate_idle_timeouts_total", "Tunnels closed by the idle timeout.", &WorkerMetrics::idle_timeouts},
                           Plain{"wsgate_heartbeat_timeouts_total", "Peers found dead by the heartbeat.", &WorkerMetrics::heartbeat_timeouts},
                           Plain{"wsgate_heartbeat_pings_total", "Heartbeat pings sent by wsgate.", &WorkerMetrics::heartbeat_pings},
                           Plain{"wsgate_drained_sessions_total", "Sessions closed with 1012: a reload removed their back end or the operator drained it.",
                                 &WorkerMetrics::drained_sessions},
                           Plain{"wsgate_empty_connections_total", "Client connections that sent no byte (port probes, TCP checks).",
                                 &WorkerMetrics::empty_connections}}) {
        header(out, m.name, "counter", m.help);
        line(fmt::format("{} {}", m.name, sum(workers, [&m](WorkerMetrics& w) { return (w.*m.member).get(); })));
    }

    header(out, "wsgate_http_requests_total", "counter", "Plain HTTP requests answered, by status class.");
    for (std::size_t c = 1; c <= 5; ++c) {
        line(fmt::format("wsgate_http_requests_total{{class=\"{}xx\"}} {}", c,
                         sum(workers, [c](WorkerMetrics& w) { return w.http_requests[c].get(); })));
    }
    header(out, "wsgate_upstream_connections_total", "counter",
           "Back-end connections used by plain HTTP requests: new, or reused from the keep-alive pool.");
    line(fmt::format("wsgate_upstream_connections_total{{kind=\"new\"}} {}",
                     sum(workers, [](WorkerMetrics& w) { return w.upstream_new.get(); })));
    line(fmt::format("wsgate_upstream_connections_total{{kind=\"reused\"}} {}",
                     sum(workers, [](WorkerMetrics& w) { return w.upstream_reused.get(); })));

    header(out, "wsgate_sessions_by_proto_total", "counter",
           "Finished sessions and refused requests, by the client's protocol (access log field proto).");
    {
        static constexpr const char* kProtos[] = {"http/1.1", "h2", "h2c"};
        for (std::size_t p = 0; p < 3; ++p) {
            line(fmt::format("wsgate_sessions_by_proto_total{{proto=\"{}\"}} {}", kProtos[p],
                             sum(workers, [p](WorkerMetrics& w) { return w.sessions_by_proto[p].get(); })));
        }
    }
    header(out, "wsgate_h2_connections_total", "counter", "Client connections that spoke HTTP/2 (h2 over TLS, h2c).");
    line(fmt::format("wsgate_h2_connections_total {}", sum(workers, [](WorkerMetrics& w) { return w.h2_connections.get(); })));
    header(out, "wsgate_h2_connections_active", "gauge", "HTTP/2 client connections open now.");
    line(fmt::format("wsgate_h2_connections_active {}",
                     sum(workers, [](WorkerMetrics& w) { return w.h2_connections_open.get(); })));
    header(out, "wsgate_h2_streams_total", "counter", "HTTP/2 request streams, by outcome at the front end.");
    line(fmt::format("wsgate_h2_streams_total{{outcome=\"opened\"}} {}",
                     sum(workers, [](WorkerMetrics& w) { return w.h2_streams_opened.get(); })));
    line(fmt::format("wsgate_h2_streams_total{{outcome=\"refused\"}} {}",
                     sum(workers, [](WorkerMetrics& w) { return w.h2_streams_refused.get(); })));
    header(out, "wsgate_h2_protocol_errors_total", "counter",
           "HTTP/2 connections ended by a protocol error or an attack bound (GOAWAY).");
    line(fmt::format("wsgate_h2_protocol_errors_total {}",
                     sum(workers, [](WorkerMetrics& w) { return w.h2_protocol_errors.get(); })));

    header(out, "wsgate_backend_up", "gauge", "1 when the back end may take new sessions (healthy), else 0.");
    for (const BackendSnapshot& b : process.backends) {
        line(fmt::format("wsgate_backend_up{{pool=\"{}\",backend=\"{}\"}} {}", escape_label(b.pool), escape_label(b.backend),
                         b.up ? 1 : 0));
    }
    header(out, "wsgate_backend_active_sessions", "gauge", "Sessions using the back end now.");
    for (const BackendSnapshot& b : process.backends) {
        line(fmt::format("wsgate_backend_active_sessions{{pool=\"{}\",backend=\"{}\"}} {}", escape_label(b.pool),
                         escape_label(b.backend), b.active));
    }
    header(out, "wsgate_health_transitions_total", "counter", "Back-end up/down transitions.");
    line(fmt::format("wsgate_health_transitions_total {}", process.health_transitions));
    header(out, "wsgate_reloads_total", "counter", "Configuration reloads, by result.");
    line(fmt::format("wsgate_reloads_total{{result=\"success\"}} {}", process.reloads_ok));
    line(fmt::format("wsgate_reloads_total{{result=\"failure\"}} {}", process.reloads_failed));
    header(out, "wsgate_config_generation", "gauge", "Number of the configuration generation in use for new sessions.");
    line(fmt::format("wsgate_config_generation {}", process.generation));
    header(out, "wsgate_draining", "gauge", "1 while the process is shutting down.");
    line(fmt::format("wsgate_draining {}", process.draining ? 1 : 0));
    return out;
}

}  // namespace obs
