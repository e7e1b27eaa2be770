// Hashing, validation and the preference-order walk shared by both tables;
// bounded loads.
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "balance/pickers.h"

namespace chash {

std::uint64_t hash_bytes(std::string_view bytes) {
    return XXH3_64bits(bytes.data(), bytes.size());
}

CircularWalk::CircularWalk(std::vector<std::uint32_t> members, std::size_t member_count)
    : members_(std::move(members)), back_(members_.size()) {
    if (members_.size() > std::numeric_limits<std::uint32_t>::max()) {
        throw std::invalid_argument("consistent-hash table too large");
    }
    // First pass: where each member appears last, so that the second pass
    // measures distances around the wrap for each member's first entry.
    constexpr std::size_t kAbsent = static_cast<std::size_t>(-1);
    std::vector<std::size_t> last(member_count, kAbsent);
    for (std::size_t i = 0; i < members_.size(); ++i) {
        if (last[members_[i]] == kAbsent) ++distinct_;
        last[members_[i]] = i;
    }
    for (std::size_t i = 0; i < members_.size(); ++i) {
        std::size_t& prev = last[members_[i]];
        back_[i] = static_cast<std::uint32_t>(prev < i ? i - prev : i + members_.size() - prev);
        prev = i;
    }
}

std::size_t CircularWalk::pick(std::size_t start, unsigned attempt,
                               const Eligibility& eligibility) const {
    const std::size_t n = members_.size();
    std::size_t met = 0;
    std::size_t i = start;
    for (std::size_t d = 0; d < n && met < distinct_; ++d, ++i) {
        if (i == n) i = 0;
        if (back_[i] <= d) continue;  // this member was met earlier in the walk
        ++met;
        const std::size_t member = members_[i];
        if (!eligibility.eligible(member)) continue;
        if (attempt == 0) return member;
        --attempt;
    }
    return kNone;
}

bool is_prime(std::size_t n) {
    if (n < 2) return false;
    for (std::size_t d = 2; d <= n / d; ++d) {
        if (n % d == 0) return false;
    }
    return true;
}

std::unique_ptr<Picker> make_picker(Algorithm algorithm, std::span<const Member> members,
                                    std::size_t maglev_table_size) {
    // Validate here rather than in the builders, so both reject the same input.
    std::vector<std::string_view> ids;
    ids.reserve(members.size());
    for (const Member& m : members) ids.push_back(m.id);
    std::sort(ids.begin(), ids.end());
    auto dup = std::adjacent_find(ids.begin(), ids.end());
    if (dup != ids.end()) {
        throw std::invalid_argument("duplicate back-end id \"" + std::string(*dup) + "\"");
    }
    switch (algorithm) {
        case Algorithm::Ring: return make_ring(members, kRingPointsPerWeight);
        case Algorithm::Maglev:
            if (!is_prime(maglev_table_size)) {
                throw std::invalid_argument("maglev table size " + std::to_string(maglev_table_size) +
                                            " is not a prime");
            }
            return make_maglev(members, maglev_table_size);
    }
    throw std::invalid_argument("unknown hashing algorithm");
}

bool under_load_bound(std::uint64_t active, std::uint64_t total_active, std::uint32_t weight,
                      std::uint64_t total_weight, double c) {
    if (weight == 0 || total_weight == 0) return false;
    const double cap = std::ceil(c * (static_cast<double>(total_active) + 1.0) *
                                 static_cast<double>(weight) / static_cast<double>(total_weight));
    return static_cast<double>(active) < cap;
}

}  // namespace chash
