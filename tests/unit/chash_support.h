// Helpers shared by the consistent-hashing tests: random configurations from a
// fixed-seed generator (so every run checks the same cases) and eligibility
// predicates.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "balance/chash.h"

namespace chash_test {

inline constexpr std::uint64_t kSeed = 0x5eed'c4a5'4000'0001ULL;

// <n> members with distinct ids shaped like addresses and weights in
// [1, <max_weight>].
inline std::vector<chash::Member> random_members(std::mt19937_64& rng, std::size_t n,
                                                 std::uint32_t max_weight = 1) {
    std::vector<chash::Member> out;
    std::set<std::string> seen;
    while (out.size() < n) {
        std::string id = "10." + std::to_string(rng() % 256) + "." + std::to_string(rng() % 256) + "." +
                         std::to_string(rng() % 256) + ":" + std::to_string(1024 + rng() % 60000);
        if (!seen.insert(id).second) continue;
        out.push_back({id, static_cast<std::uint32_t>(1 + rng() % max_weight)});
    }
    return out;
}

inline std::vector<std::uint64_t> random_keys(std::mt19937_64& rng, std::size_t n) {
    std::vector<std::uint64_t> out(n);
    for (auto& k : out) k = chash::hash_bytes("session-" + std::to_string(rng()));
    return out;
}

// Eligible unless listed in <down>.
class AllBut final : public chash::Eligibility {
public:
    explicit AllBut(std::set<std::size_t> down) : down_(std::move(down)) {}
    bool eligible(std::size_t index) const override { return down_.count(index) == 0; }

private:
    std::set<std::size_t> down_;
};

// Bounded loads over live session counts, as the runtime will consult them.
class UnderLoadBound final : public chash::Eligibility {
public:
    UnderLoadBound(const std::vector<std::uint64_t>& active, const std::vector<chash::Member>& members,
                   double c)
        : active_(active), members_(members), c_(c) {
        for (const auto& m : members) total_weight_ += m.weight;
    }
    bool eligible(std::size_t index) const override {
        std::uint64_t total = 0;
        for (std::uint64_t a : active_) total += a;
        return chash::under_load_bound(active_[index], total, members_[index].weight, total_weight_, c_);
    }

private:
    const std::vector<std::uint64_t>& active_;
    const std::vector<chash::Member>& members_;
    double c_;
    std::uint64_t total_weight_ = 0;
};

// The key's whole preference order: pick() for attempt 0, 1, ... until kNone.
inline std::vector<std::size_t> preference(const chash::Picker& picker, std::uint64_t key,
                                           const chash::Eligibility& eligibility = chash::AllEligible{}) {
    std::vector<std::size_t> out;
    for (unsigned a = 0;; ++a) {
        const std::size_t m = picker.pick(key, a, eligibility);
        if (m == chash::kNone) break;
        out.push_back(m);
        if (out.size() > picker.size()) break;  // a broken picker; the caller's checks will fail
    }
    return out;
}

}  // namespace chash_test
