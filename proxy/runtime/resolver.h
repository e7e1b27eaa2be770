// The DNS side of dynamic pools: c-ares on the main thread's event loop.
// Every name of the configuration ([[pool.backend]] `address = "NAME:PORT"`
// or `srv = "NAME"`) is resolved at start and again every [resolver]
// interval (sooner when the answer's TTL is shorter); each answer goes
// through the pure rules of config/discovery.h (normalisation, hold), and a
// name whose members changed calls <on_change>, which rebuilds and publishes
// a generation the way a reload does. Nothing here blocks: c-ares' sockets
// and its retry timer are libevent events.
//
// Why c-ares and not libevent's evdns: SRV records (evdns has only A/AAAA and
// PTR), the TTL of every answer, a per-query timeout that moves on to the
// next server, and /etc/resolv.conf parsing when no servers are configured.
#pragma once

#include <ares.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <event2/event.h>

#include "config/config.h"
#include "config/discovery.h"
#include "observability/error_log.h"

namespace runtime {

class Resolver {
public:
    Resolver(event_base* base, obs::ErrorLog& log, std::function<void()> on_change);
    ~Resolver();
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    // Follows the names of <file>'s pools with <file>.resolver's settings,
    // from now on. A name followed before keeps its members (so a reload
    // moves no key) and is resolved again at once; a name no longer used is
    // forgotten. Returns false with <error> when c-ares cannot start (the
    // names then stay unresolved).
    bool configure(const config::Config& file, std::string& error);

    // The members of every followed name, by discovery::source_key().
    discovery::Resolved resolved() const;

    // Counts a membership change of <pool> (wsgate_pool_membership_changes_total).
    void count_change(const std::string& pool) { ++changes_[pool]; }

    // Prometheus text: wsgate_dns_queries_total{result},
    // wsgate_dns_members{pool} (discovered back ends of <current>'s pools)
    // and wsgate_pool_membership_changes_total{pool}.
    std::string render_metrics(const config::Config& current) const;

private:
    struct Name;
    struct Query;

    static void on_socket_state(void* self, ares_socket_t fd, int readable, int writable);
    static void on_socket(evutil_socket_t fd, short what, void* self);
    static void on_retry_timer(evutil_socket_t, short, void* self);
    static void on_name_timer(evutil_socket_t, short, void* name);
    static void on_answer(void* query, int status, int timeouts, unsigned char* answer, int length);

    bool open_channel(const config::ResolverSection& settings, std::string& error);
    void close_channel();
    void arm_retry_timer();
    void start(Name& name);
    void send(Name& name, const std::string& host, int type, std::uint16_t port, std::uint32_t weight);
    void answered(Query& query, int status, const unsigned char* answer, int length);
    template <typename Ttl, typename Address>
    static int collect(int (*parse)(const unsigned char*, int, hostent**, Ttl*, int*), int family,
                       Address Ttl::*address, const unsigned char* answer, int length, const Query& query, Name& name,
                       int& count);
    void finish(Name& name);
    void schedule(Name& name, std::int64_t delay_ms);
    void count(discovery::Outcome outcome) { ++queries_[std::string(discovery::to_string(outcome))]; }

    event_base* base_;
    obs::ErrorLog& log_;
    std::function<void()> on_change_;
    config::ResolverSection settings_;
    ares_channel channel_ = nullptr;
    event* retry_timer_ = nullptr;             // c-ares' own timeouts and retransmissions
    std::map<ares_socket_t, event*> sockets_;  // c-ares' sockets, watched for what it asks
    std::map<std::string, std::unique_ptr<Name>> names_;  // by discovery::source_key()
    std::uint64_t serial_ = 0;                 // of resolutions: an answer to an older one is stale
    std::map<std::string, std::uint64_t> queries_;  // by result label
    std::map<std::string, std::uint64_t> changes_;  // by pool name
};

}  // namespace runtime
