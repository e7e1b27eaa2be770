// A configuration generation: the validated Config plus what the runtime
// builds from it once (hash tables per pool, shared back-end state). Immutable
// after build except for the atomics in BackendState, which are shared by
// every worker and carried over to the next generation for back ends that
// keep their id.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "balance/chash.h"
#include "config/config.h"

namespace runtime {

// Live facts about one back end, shared across workers and generations.
struct BackendState {
    std::atomic<std::uint64_t> active{0};          // sessions using it now
    std::atomic<bool> healthy{true};               // active health checks' verdict
    std::atomic<std::int64_t> down_until_ms{0};    // passive health: skip until then
    std::atomic<std::uint32_t> connect_failures{0};  // consecutive
    // Runtime drain from the admin API (POST .../drain): new sessions skip
    // it and its tunnels close with 1012 spread over <drain_window_ms>.
    // Kept across reloads with the rest of this state.
    std::atomic<bool> draining{false};
    std::atomic<std::int64_t> drain_window_ms{0};
};

struct PoolRuntime {
    const config::Pool* config = nullptr;  // points into Generation::config
    std::unique_ptr<chash::Picker> picker; // indices are positions in config->backends
    std::vector<std::shared_ptr<BackendState>> states;  // parallel to config->backends
    std::uint64_t total_weight = 0;
    std::vector<std::string> sticky_tokens;  // parallel to config->backends; empty without sticky_cookie
};

class Generation {
public:
    // Builds the runtime objects for <config>. Back ends whose id also exists
    // in <previous> keep their BackendState (and so their session counts).
    Generation(std::shared_ptr<const config::Config> config, std::uint64_t number,
               const Generation* previous);

    const config::Config& config() const { return *config_; }
    std::uint64_t number() const { return number_; }
    const std::vector<PoolRuntime>& pools() const { return pools_; }

    // State of the back end with <id> in this generation, or nullptr.
    std::shared_ptr<BackendState> find_state(const std::string& id) const;

private:
    std::shared_ptr<const config::Config> config_;
    std::uint64_t number_;
    std::vector<PoolRuntime> pools_;
    std::map<std::string, std::shared_ptr<BackendState>> states_by_id_;
};

// Whether back end <index> of <pool> may take a new session at <now_ms>:
// healthy by its active checks, not marked down by passive checks, not
// drained by the operator, and under the bounded-load cap when the pool has
// balance_factor > 1.
class PoolEligibility final : public chash::Eligibility {
public:
    PoolEligibility(const PoolRuntime& pool, std::int64_t now_ms);
    bool eligible(std::size_t index) const override;

private:
    const PoolRuntime& pool_;
    std::int64_t now_ms_;
    std::uint64_t total_active_ = 0;
};

// The back end for the next connect attempt of a request whose key hashes to
// <key_hash>: the <sticky> one (from the pool's sticky cookie, or
// chash::kNone) while it is eligible and not in <tried>, else the first
// eligible back end of the key's failover order not in <tried>; kNone when
// none is left.
std::size_t pick_backend(const PoolRuntime& pool, std::uint64_t key_hash, std::size_t sticky,
                         std::span<const std::size_t> tried, std::int64_t now_ms);

// The status of a request that found no back end in <pool>: 503 when the
// pool has no members at all (its DNS names have not resolved yet), 502 when
// its members are down or unreachable.
inline int no_backend_status(const PoolRuntime& pool) { return pool.states.empty() ? 503 : 502; }

// The back end of <pool> that <request>'s sticky cookie names, or
// chash::kNone: no sticky_cookie configured, no cookie sent, or a token that
// names none of the pool's back ends (a removed one, a forged one).
std::size_t sticky_backend(const PoolRuntime& pool, const http1::RequestHead& request);

}  // namespace runtime
