// Consistent hashing of session keys onto back ends, pure: build a table once
// per configuration or health change (slow path), then pick() without
// allocating (hot path). No sockets, no clocks, no globals.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/http1.h"

namespace chash {

// 64-bit hash of a key or a back-end identity: XXH3-64 with seed 0, so that
// every process on every machine maps a key identically.
std::uint64_t hash_bytes(std::string_view bytes);

enum class Algorithm { Ring, Maglev };

// Where a pool finds the session key in a request (config `hash`).
// Claim: a claim of the route's verified JSON Web Token (the runtime supplies it).
enum class KeySource { Ip, Header, Cookie, Query, Path, Claim };

struct KeySpec {
    KeySource source = KeySource::Ip;
    std::string name;  // header, cookie or query parameter name (empty for ip/path)
};

// Parses a config `hash` value: "ip", "path", "header:NAME", "cookie:NAME",
// "query:NAME", "claim:NAME". Returns false for anything else (or an empty NAME).
bool parse_key_spec(std::string_view text, KeySpec& out);
std::string to_string(const KeySpec& spec);

struct Key {
    std::string_view value;  // view into the request or <client_ip>
    bool fell_back = false;  // the request lacked the key: the client address was used
};

// Extracts the session key of <request> per <spec>; a request without it
// falls back to <client_ip> (fell_back = true). Header names compare
// case-insensitively, cookie and query names exactly; the first occurrence
// wins; query values are used as sent (not percent-decoded); a cookie value in
// DQUOTEs loses them; an empty value counts as missing.
Key extract_key(const KeySpec& spec, const http1::RequestHead& request,
                std::string_view client_ip);

struct Member {
    std::string id;         // stable identity (config `id`, default the address)
    std::uint32_t weight = 1;
};

// Decides whether the back end at <index> (position in the members given to
// make_picker) may take a new session now: healthy, not draining, not full,
// under the bounded-load cap.
class Eligibility {
public:
    virtual ~Eligibility() = default;
    virtual bool eligible(std::size_t index) const = 0;
};

// Every back end is eligible.
class AllEligible final : public Eligibility {
public:
    bool eligible(std::size_t) const override { return true; }
};

inline constexpr std::size_t kNone = static_cast<std::size_t>(-1);

class Picker {
public:
    virtual ~Picker() = default;
    // The back end for a key with hash <key_hash>: walks the key's fixed
    // preference order (a deterministic sequence of distinct back ends that
    // depends only on the key and the members' ids and weights), skips the
    // ineligible ones, and returns the <attempt>-th eligible one (attempt 0 =
    // owner; 1, 2 ... = failover). kNone when there are not that many. Never
    // allocates. A key whose owner is eligible always gets that owner, so
    // marking other back ends ineligible moves no other key.
    virtual std::size_t pick(std::uint64_t key_hash, unsigned attempt,
                             const Eligibility& eligibility) const = 0;
    virtual std::size_t size() const = 0;  // number of members
};

// Builds the table for <members> (ids must be distinct, weights >= 1). The
// result does not depend on the order of <members> beyond the indices that
// pick() returns. Ring: 320 points per unit of weight (twice ketama's 160,
// for an even load over few back ends; see balance/pickers.h). Maglev: table
// size <maglev_table_size> (a prime, default 65537), weights honoured; keep it
// above 100 times the number of back ends (Maglev paper §3.4), and larger
// still to cut the keys moved when a back end leaves. Throws
// std::invalid_argument for duplicate ids or a table size that is not prime.
// A member of weight 0 is never picked.
std::unique_ptr<Picker> make_picker(Algorithm algorithm, std::span<const Member> members,
                                    std::size_t maglev_table_size = 65537);

// Bounded loads (Mirrokni et al. 2018): with balance factor <c> > 1, a back end
// of weight <weight> (of <total_weight>) may take a new session only while
// its <active> sessions are below ceil(c * (total_active + 1) * weight / total_weight).
bool under_load_bound(std::uint64_t active, std::uint64_t total_active, std::uint32_t weight,
                      std::uint64_t total_weight, double c);

}  // namespace chash
