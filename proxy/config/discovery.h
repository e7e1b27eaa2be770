// Dynamic pools, the pure part: DNS names in the configuration, the answers
// they get turned into members, the hold rule when a name fails, the diff
// between two memberships, and the expansion of a file's Config into the
// Config a generation is built from. No sockets, no clocks (times are
// arguments), no c-ares: runtime/resolver.h does the I/O and calls these.
//
// Determinism is the point: every instance of a fleet that sees the same
// answers must build the same pools, so members are identified by "IP:port"
// only, sorted and deduplicated here; the order of records in an answer and
// duplicate records never change a pool.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace discovery {

// Why <name> is not a DNS name we query, or "" when it is: dot-separated
// labels of 1..63 letters, digits, '-' or '_' (SRV labels start with '_'),
// 253 bytes at most, an optional trailing dot, at least one letter (so that
// a mistyped numeric address is not taken for a name).
std::string_view name_problem(std::string_view name);

// Splits "NAME:PORT" (port 1..65535) into <name> and <port>; returns why it
// is not one, or "".
std::string_view named_address_problem(std::string_view text, std::string& name, std::uint16_t& port);

// The largest weight a discovered member gets: SRV weights go to 65535, but a
// ring gives every unit of weight 320 points, so they are capped like the
// file's `weight` (1..256).
inline constexpr std::uint32_t kMaxWeight = 256;

// A shortest re-resolution delay: the [resolver] interval may not be shorter,
// and a TTL shorter than this is read as this.
inline constexpr std::int64_t kMinIntervalMs = 100;

// One address record turned into a candidate member: <ip> as the resolver
// printed it ("10.0.0.5", "fd00::5"), the port, the weight.
struct Record {
    std::string ip;
    std::uint16_t port = 0;
    std::uint32_t weight = 1;
};

struct Member {
    config::SocketAddress address;  // address.text is the id: "10.0.0.5:9000", "[fd00::5]:9000"
    std::uint32_t weight = 1;
    const std::string& id() const { return address.text; }
};

// The members of <records>: invalid addresses and port 0 dropped, weight 0
// counted as 1 and capped at kMaxWeight, sorted by id, one member per id
// (the largest weight among duplicates). The result depends only on the
// multiset of records, never on their order.
std::vector<Member> normalise(std::span<const Record> records);

struct SrvRecord {
    std::string target;  // a host name, resolved with A/AAAA queries
    std::uint16_t port = 0;
    std::uint16_t priority = 0;
    std::uint16_t weight = 0;
};

// The SRV records a pool uses (RFC 2782): those of the lowest priority, port
// 0 and the "." target (service not available) dropped, targets compared
// without case and trailing dot, sorted, duplicates merged (largest weight).
std::vector<SrvRecord> usable_srv(std::span<const SrvRecord> records);

// How one resolution of a name ended.
enum class Outcome { Ok, Empty, NotFound, ServFail, Timeout, Refused, Error };
std::string_view to_string(Outcome outcome);  // the metric label: "ok", "empty", "nxdomain" ...

// One name resolved by several queries (A and AAAA, or an SRV record's
// targets): the first failure wins (a partial answer must not shrink a pool);
// Empty only when every part was empty.
Outcome combine(Outcome a, Outcome b);

// What the pool uses of one name, across resolutions.
struct NameState {
    std::vector<Member> members;
    std::int64_t last_good_ms = -1;  // when an answer last had members; -1 = never
};

// Applies one resolution of the name at <now_ms>: an Ok answer replaces the
// members; anything else (failure or a valid empty answer) keeps them until
// <hold_ms> after the last good answer, then empties them. Returns whether
// the members changed.
bool apply(NameState& state, Outcome outcome, std::vector<Member> answer, std::int64_t now_ms,
           std::int64_t hold_ms);

// How long until the name is resolved again: <ttl_seconds> of the answer,
// within [kMinIntervalMs, <interval_ms>] (a TTL longer than the interval
// never delays a re-resolution; a shorter one brings it forward).
std::int64_t next_delay_ms(std::int64_t ttl_seconds, std::int64_t interval_ms);

struct Diff {
    std::vector<std::string> added;
    std::vector<std::string> removed;
    std::vector<std::string> kept;
    bool changed() const { return !added.empty() || !removed.empty(); }
};

// <before> -> <after> (ids in any order, duplicates ignored); each list sorted.
Diff diff(std::span<const std::string> before, std::span<const std::string> after);

// The log line of a change: "pool chat: +10.0.0.7:9000 -10.0.0.5:9000".
std::string describe(std::string_view pool, const Diff& change);

// The key of a source in the resolved map: its text as written.
inline const std::string& source_key(const config::BackendSource& source) { return source.text; }

// The members each source currently has, by source_key().
using Resolved = std::map<std::string, std::vector<Member>>;

// <file> with each pool's discovered members added to its backends: id
// "IP:port", weight the source's (address) or the record's (SRV), tls the
// source's, `source` its text. A member whose id a backend written in the
// file or an earlier source already has is left out. A pool with sources
// lists its backends sorted by id. Pools without sources are unchanged.
std::shared_ptr<const config::Config> expand(const config::Config& file, const Resolved& resolved);

// The ids of pool <pool_index>'s backends in <config>.
std::vector<std::string> backend_ids(const config::Config& config, std::size_t pool_index);

}  // namespace discovery
