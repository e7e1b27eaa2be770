#include "runtime/generation.h"

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
    if (pool_.config->balance_factor > 1.0) {
        return chash::under_load_bound(state.active.load(std::memory_order_relaxed), total_active_,
                                       pool_.config->backends[index].weight, pool_.total_weight,
                                       pool_.config->balance_factor);
    }
    return true;
}

}  // namespace runtime
