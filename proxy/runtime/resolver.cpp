#include "runtime/resolver.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "observability/metrics.h"

namespace runtime {

namespace {

// A name that keeps failing is reported at most this often.
constexpr std::int64_t kWarnEveryMs = 30000;
// The most addresses one answer yields (c-ares fills a caller's array).
constexpr int kMaxAddresses = 1024;

std::int64_t monotonic_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

timeval to_timeval(std::int64_t ms) {
    return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
}

discovery::Outcome outcome_of(int status) {
    switch (status) {
        case ARES_SUCCESS: return discovery::Outcome::Ok;
        case ARES_ENODATA: return discovery::Outcome::Empty;
        case ARES_ENOTFOUND: return discovery::Outcome::NotFound;
        case ARES_ESERVFAIL: return discovery::Outcome::ServFail;
        case ARES_ETIMEOUT: return discovery::Outcome::Timeout;
        case ARES_EREFUSED:
        case ARES_ECONNREFUSED: return discovery::Outcome::Refused;
        default: return discovery::Outcome::Error;
    }
}

}  // namespace

// One followed name and its resolution in flight.
struct Resolver::Name {
    Resolver* owner = nullptr;
    config::BackendSource source;
    discovery::NameState state;
    event* timer = nullptr;  // the next resolution
    // The resolution in flight (serial 0 = none): queries still unanswered,
    // the combined outcome so far, the addresses and the shortest TTL seen.
    std::uint64_t serial = 0;
    unsigned pending = 0;
    discovery::Outcome outcome = discovery::Outcome::Empty;
    std::vector<discovery::Record> records;
    std::int64_t ttl = -1;
    bool failing = false;
    std::int64_t warned_ms = 0;

    ~Name() {
        if (timer) event_free(timer);
    }
};

// One DNS query: what its answer is for. Names are looked up by key when the
// answer arrives, so a name forgotten meanwhile is never touched.
struct Resolver::Query {
    Resolver* owner;
    std::string key;
    std::uint64_t serial;
    int type;  // ns_t_a, ns_t_aaaa or ns_t_srv
    std::uint16_t port;
    std::uint32_t weight;
};

Resolver::Resolver(event_base* base, obs::ErrorLog& log, std::function<void()> on_change)
    : base_(base), log_(log), on_change_(std::move(on_change)) {
    ares_library_init(ARES_LIB_INIT_ALL);
    retry_timer_ = evtimer_new(base_, &Resolver::on_retry_timer, this);
}

Resolver::~Resolver() {
    close_channel();
    names_.clear();
    event_free(retry_timer_);
    ares_library_cleanup();
}

bool Resolver::open_channel(const config::ResolverSection& settings, std::string& error) {
    ares_options options{};
    options.sock_state_cb = &Resolver::on_socket_state;
    options.sock_state_cb_data = this;
    options.timeout = static_cast<int>(std::min<std::int64_t>(settings.timeout.count(), std::numeric_limits<int>::max()));
    options.tries = 1;  // each server once per resolution: the next interval retries, and hold covers the gap
    const int rc = ares_init_options(&channel_, &options, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        channel_ = nullptr;
        error = ares_strerror(rc);
        return false;
    }
    if (!settings.servers.empty()) {
        std::string csv;
        for (const config::SocketAddress& server : settings.servers) csv += (csv.empty() ? "" : ",") + server.text;
        if (const int set = ares_set_servers_ports_csv(channel_, csv.c_str()); set != ARES_SUCCESS) {
            error = fmt::format("resolver.servers: {}", ares_strerror(set));
            close_channel();
            return false;
        }
    }
    return true;
}

void Resolver::close_channel() {
    if (channel_ == nullptr) return;
    ares_destroy(channel_);  // answers every query with ARES_EDESTRUCTION
    channel_ = nullptr;
    for (auto& [fd, e] : sockets_) event_free(e);
    sockets_.clear();
    evtimer_del(retry_timer_);
}

bool Resolver::configure(const config::Config& file, std::string& error) {
    settings_ = file.resolver;
    std::map<std::string, const config::BackendSource*> wanted;
    for (const config::Pool& pool : file.pools) {
        for (const config::BackendSource& source : pool.sources) wanted.emplace(discovery::source_key(source), &source);
    }
    for (auto it = names_.begin(); it != names_.end();) {
        it = wanted.count(it->first) ? std::next(it) : names_.erase(it);
    }
    close_channel();
    if (wanted.empty()) return true;
    if (!open_channel(settings_, error)) return false;
    for (const auto& [key, source] : wanted) {
        std::unique_ptr<Name>& name = names_[key];
        if (!name) {
            name = std::make_unique<Name>();
            name->owner = this;
            name->timer = evtimer_new(base_, &Resolver::on_name_timer, name.get());
        }
        name->source = *source;
        name->serial = 0;
        name->pending = 0;
        start(*name);
    }
    return true;
}

discovery::Resolved Resolver::resolved() const {
    discovery::Resolved out;
    for (const auto& [key, name] : names_) out[key] = name->state.members;
    return out;
}

void Resolver::on_socket_state(void* self, ares_socket_t fd, int readable, int writable) {
    auto* resolver = static_cast<Resolver*>(self);
    auto it = resolver->sockets_.find(fd);
    if (it != resolver->sockets_.end()) {
        event_free(it->second);
        resolver->sockets_.erase(it);
    }
    if (!readable && !writable) return;
    const short what = static_cast<short>(EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    event* e = event_new(resolver->base_, fd, what, &Resolver::on_socket, resolver);
    event_add(e, nullptr);
    resolver->sockets_[fd] = e;
}

void Resolver::on_socket(evutil_socket_t fd, short what, void* self) {
    auto* resolver = static_cast<Resolver*>(self);
    ares_process_fd(resolver->channel_, (what & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    resolver->arm_retry_timer();
}

void Resolver::on_retry_timer(evutil_socket_t, short, void* self) {
    auto* resolver = static_cast<Resolver*>(self);
    ares_process_fd(resolver->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    resolver->arm_retry_timer();
}

// c-ares keeps its own deadlines (query timeouts, retransmissions); the timer
// fires at the nearest one.
void Resolver::arm_retry_timer() {
    if (channel_ == nullptr) return;
    timeval longest{1, 0};
    timeval tv{};
    if (ares_timeout(channel_, &longest, &tv) != nullptr) evtimer_add(retry_timer_, &tv);
}

void Resolver::on_name_timer(evutil_socket_t, short, void* name) {
    auto* n = static_cast<Name*>(name);
    n->owner->start(*n);
}

void Resolver::schedule(Name& name, std::int64_t delay_ms) {
    const timeval tv = to_timeval(delay_ms);
    evtimer_add(name.timer, &tv);
}

void Resolver::start(Name& name) {
    if (channel_ == nullptr || name.serial != 0) return;
    name.serial = ++serial_;
    name.outcome = discovery::Outcome::Empty;
    name.records.clear();
    name.ttl = -1;
    // One pending count of our own while the queries are sent: c-ares may
    // answer one synchronously, and the resolution must not finish early.
    name.pending = 1;
    if (name.source.srv) {
        send(name, name.source.name, ns_t_srv, 0, 0);
    } else {
        send(name, name.source.name, ns_t_a, name.source.port, 1);
        send(name, name.source.name, ns_t_aaaa, name.source.port, 1);
    }
    if (--name.pending == 0) finish(name);
    arm_retry_timer();
}

void Resolver::send(Name& name, const std::string& host, int type, std::uint16_t port, std::uint32_t weight) {
    ++name.pending;
    auto* query = new Query{this, discovery::source_key(name.source), name.serial, type, port, weight};
    ares_query(channel_, host.c_str(), ns_c_in, type, &Resolver::on_answer, query);
}

void Resolver::on_answer(void* query, int status, int, unsigned char* answer, int length) {
    std::unique_ptr<Query> owned(static_cast<Query*>(query));
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) return;  // the channel is going away
    owned->owner->answered(*owned, status, answer, length);
}

void Resolver::answered(Query& query, int status, const unsigned char* answer, int length) {
    auto found = names_.find(query.key);
    if (found == names_.end() || found->second->serial != query.serial) return;  // stale
    Name& name = *found->second;
    discovery::Outcome outcome = outcome_of(status);
    if (status == ARES_SUCCESS && (query.type == ns_t_a || query.type == ns_t_aaaa)) {
        int count = 0;
        const int rc = query.type == ns_t_a
                           ? collect<ares_addrttl>(ares_parse_a_reply, AF_INET, &ares_addrttl::ipaddr, answer, length,
                                                   query, name, count)
                           : collect<ares_addr6ttl>(ares_parse_aaaa_reply, AF_INET6, &ares_addr6ttl::ip6addr, answer,
                                                    length, query, name, count);
        outcome = rc == ARES_SUCCESS ? (count > 0 ? discovery::Outcome::Ok : discovery::Outcome::Empty)
                  : rc == ARES_ENODATA ? discovery::Outcome::Empty
                                       : discovery::Outcome::Error;
    } else if (status == ARES_SUCCESS && query.type == ns_t_srv) {
        ares_srv_reply* replies = nullptr;
        const int rc = ares_parse_srv_reply(answer, length, &replies);
        std::vector<discovery::SrvRecord> records;
        for (ares_srv_reply* r = replies; rc == ARES_SUCCESS && r != nullptr; r = r->next) {
            records.push_back({r->host, r->port, r->priority, r->weight});
        }
        if (replies) ares_free_data(replies);
        const std::vector<discovery::SrvRecord> usable = discovery::usable_srv(records);
        outcome = rc == ARES_SUCCESS || rc == ARES_ENODATA
                      ? (usable.empty() ? discovery::Outcome::Empty : discovery::Outcome::Ok)
                      : discovery::Outcome::Error;
        for (const discovery::SrvRecord& target : usable) {
            send(name, target.target, ns_t_a, target.port, target.weight);
            send(name, target.target, ns_t_aaaa, target.port, target.weight);
        }
    }
    count(outcome);
    name.outcome = discovery::combine(name.outcome, outcome);
    if (--name.pending == 0) finish(name);
}

// Parses an A or AAAA answer with <parse> and appends its addresses to
// <name>'s records with <query>'s port and weight; <count> = how many.
template <typename Ttl, typename Address>
int Resolver::collect(int (*parse)(const unsigned char*, int, hostent**, Ttl*, int*), int family,
                      Address Ttl::*address, const unsigned char* answer, int length, const Query& query, Name& name,
                      int& count) {
    std::vector<Ttl> addresses(kMaxAddresses);
    count = kMaxAddresses;
    const int rc = parse(answer, length, nullptr, addresses.data(), &count);
    char text[INET6_ADDRSTRLEN];
    for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
        inet_ntop(family, &(addresses[i].*address), text, sizeof text);
        name.records.push_back({text, query.port, query.weight});
        name.ttl = name.ttl < 0 ? addresses[i].ttl : std::min<std::int64_t>(name.ttl, addresses[i].ttl);
    }
    if (rc != ARES_SUCCESS) count = 0;
    return rc;
}

void Resolver::finish(Name& name) {
    const std::int64_t now = monotonic_ms();
    std::vector<discovery::Member> members = discovery::normalise(name.records);
    const bool good = name.outcome == discovery::Outcome::Ok && !members.empty();
    const std::size_t before = name.state.members.size();
    const std::int64_t hold = settings_.hold.count();
    const bool changed = discovery::apply(name.state, name.outcome, std::move(members), now, hold);
    const std::string_view why = name.outcome == discovery::Outcome::Ok ? "no addresses"
                                                                          : discovery::to_string(name.outcome);
    if (good) {
        if (name.failing) {
            log_.log(obs::Level::Info, "resolver: {} resolves again: {} member(s)", name.source.text,
                     name.state.members.size());
        }
        name.failing = false;
    } else if (changed) {
        log_.log(obs::Level::Warn, "resolver: {}: {} for {} ms (resolver.hold): its {} member(s) leave the pool",
                 name.source.text, why, hold, before);
        name.warned_ms = now;
        name.failing = true;
    } else if (!name.failing || now - name.warned_ms >= kWarnEveryMs) {
        if (before == 0) {
            log_.log(obs::Level::Warn, "resolver: {}: {}; no member from it yet", name.source.text, why);
        } else {
            log_.log(obs::Level::Warn, "resolver: {}: {}; keeping the last {} member(s) for up to {} ms",
                     name.source.text, why, before, hold);
        }
        name.warned_ms = now;
        name.failing = true;
    }
    name.serial = 0;
    schedule(name, good ? discovery::next_delay_ms(name.ttl, settings_.interval.count()) : settings_.interval.count());
    if (changed) on_change_();
}

std::string Resolver::render_metrics(const config::Config& current) const {
    bool any = false;
    for (const config::Pool& pool : current.pools) any = any || !pool.sources.empty();
    if (!any) return {};
    std::string out =
        "# HELP wsgate_dns_queries_total DNS queries for discovered back ends, by result.\n"
        "# TYPE wsgate_dns_queries_total counter\n";
    for (discovery::Outcome o : {discovery::Outcome::Ok, discovery::Outcome::Empty, discovery::Outcome::NotFound,
                                 discovery::Outcome::ServFail, discovery::Outcome::Timeout, discovery::Outcome::Refused,
                                 discovery::Outcome::Error}) {
        const std::string label(discovery::to_string(o));
        const auto it = queries_.find(label);
        out += fmt::format("wsgate_dns_queries_total{{result=\"{}\"}} {}\n", label, it == queries_.end() ? 0 : it->second);
    }
    out += "# HELP wsgate_dns_members Back ends of a pool discovered through DNS.\n# TYPE wsgate_dns_members gauge\n";
    std::string changes =
        "# HELP wsgate_pool_membership_changes_total Membership changes of a pool from DNS answers.\n"
        "# TYPE wsgate_pool_membership_changes_total counter\n";
    for (const config::Pool& pool : current.pools) {
        if (pool.sources.empty()) continue;
        std::size_t members = 0;
        for (const config::Backend& backend : pool.backends) members += backend.source.empty() ? 0 : 1;
        const std::string label = obs::escape_label(pool.name);
        out += fmt::format("wsgate_dns_members{{pool=\"{}\"}} {}\n", label, members);
        const auto it = changes_.find(pool.name);
        changes += fmt::format("wsgate_pool_membership_changes_total{{pool=\"{}\"}} {}\n", label,
                               it == changes_.end() ? 0 : it->second);
    }
    return out + changes;
}

}  // namespace runtime
