#include "runtime/generation.h"

#include <algorithm>

#include "balance/sticky.h"

namespace runtime {

Generation::Generation(std::shared_ptr<const config::Config> config, std::uint64_t number,
                       const Generation* previous)
    : config_(std::move(config)), number_(number) {
    pools_.reserve(config_->pools.size());
    for (const config::Pool& pool : config_->pools) {
        PoolRuntime runtime;
        runtime.config = &pool;
        std::vector<chash::Member> members;
        members.reserve(pool.backends.size());
        for (const config::Backend& backend : pool.backends) {
            members.push_back({backend.id, backend.weight});
            runtime.total_weight += backend.weight;
            std::shared_ptr<BackendState> state = states_by_id_[backend.id];
            if (!state && previous) state = previous->find_state(backend.id);
            if (!state) state = std::make_shared<BackendState>();
            states_by_id_[backend.id] = state;
            runtime.states.push_back(state);
        }
        runtime.picker = chash::make_picker(pool.algorithm, members, pool.maglev_table_size);
        if (!pool.sticky_cookie.empty()) {
            for (const config::Backend& backend : pool.backends) {
                runtime.sticky_tokens.push_back(sticky::token(pool.name, backend.id));
            }
        }
        pools_.push_back(std::move(runtime));
    }
}

std::shared_ptr<BackendState> Generation::find_state(const std::string& id) const {
    auto it = states_by_id_.find(id);
    return it == states_by_id_.end() ? nullptr : it->second;
}

PoolEligibility::PoolEligibility(const PoolRuntime& pool, std::int64_t now_ms)
    : pool_(pool), now_ms_(now_ms) {
    if (pool_.config->balance_factor > 1.0) {
        for (const auto& state : pool_.states) total_active_ += state->active.load(std::memory_order_relaxed);
    }
}

bool PoolEligibility::eligible(std::size_t index) const {
    const BackendState& state = *pool_.states[index];
    if (!state.healthy.load(std::memory_order_relaxed)) return false;
    if (state.down_until_ms.load(std::memory_order_relaxed) > now_ms_) return false;
    if (state.draining.load(std::memory_order_relaxed)) return false;
    if (pool_.config->balance_factor > 1.0) {
        return chash::under_load_bound(state.active.load(std::memory_order_relaxed), total_active_,
                                       pool_.config->backends[index].weight, pool_.total_weight,
                                       pool_.config->balance_factor);
    }
    return true;
}

std::size_t sticky_backend(const PoolRuntime& pool, const http1::RequestHead& request) {
    if (pool.sticky_tokens.empty()) return chash::kNone;
    return sticky::find(pool.sticky_tokens, sticky::cookie_value(request, pool.config->sticky_cookie));
}

std::size_t pick_backend(const PoolRuntime& pool, std::uint64_t key_hash, std::size_t sticky,
                         std::span<const std::size_t> tried, std::int64_t now_ms) {
    // Eligibility may change between attempts (a failed back end can be
    // marked down meanwhile), so the walk skips what was tried rather than
    // counting attempts.
    PoolEligibility eligibility(pool, now_ms);
    auto untried = [&](std::size_t index) { return std::find(tried.begin(), tried.end(), index) == tried.end(); };
    if (sticky != chash::kNone && sticky < pool.states.size() && eligibility.eligible(sticky) && untried(sticky)) {
        return sticky;
    }
    for (unsigned rank = 0;; ++rank) {
        const std::size_t index = pool.picker->pick(key_hash, rank, eligibility);
        if (index == chash::kNone || untried(index)) return index;
    }
}

}  // namespace runtime
