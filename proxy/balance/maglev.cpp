// Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
// Network Load Balancer", NSDI 2016, §3.4, Pseudocode 1), weighted as in
// Envoy's maglev_lb.cc:
//
// - Members are sorted by id, so the table depends only on ids and weights.
// - Member m walks its own permutation of the M slots:
//     offset = hash_bytes(m.id) % M
//     skip   = XXH3_64bits_withSeed(m.id, seed 1) % (M - 1) + 1
//     slot_j = (offset + j * skip) % M
//   M is prime, so every skip is coprime with M and the walk covers all slots.
// - Weighted turns: rounds r = 0, 1, 2 ...; in each round, members in id
//   order whose r * weight >= target take one turn (claim the next free slot
//   of their permutation) and add max_weight to their target. A member of
//   weight w thus takes w turns per max_weight rounds.
//
// A key with hash h is owned by table[h % M]. Its preference order walks the
// table forward from that slot, wrapping, listing each member the first time
// it is met. Table slots are filled by independent permutations, so the
// member in the next slot is in effect a weighted random draw: the keys of a
// back end that goes down spread over the others in proportion to their
// weights. Changing any of this re-pins every session in production (see the
// golden vectors in tests/unit/test_maglev.cpp).
#include <xxhash.h>

#include <algorithm>
#include <numeric>

#include "balance/pickers.h"

namespace chash {

namespace {

class Maglev final : public Picker {
public:
    Maglev(std::vector<std::uint32_t> table, std::size_t member_count)
        : walk_(std::move(table), member_count), size_(member_count) {}

    std::size_t pick(std::uint64_t key_hash, unsigned attempt,
                     const Eligibility& eligibility) const override {
        const std::size_t m = walk_.length();
        if (m == 0) return kNone;
        return walk_.pick(static_cast<std::size_t>(key_hash % m), attempt, eligibility);
    }

    std::size_t size() const override { return size_; }

private:
    CircularWalk walk_;  // the lookup table: slot -> member index
    std::size_t size_;
};

}  // namespace

std::unique_ptr<Picker> make_maglev(std::span<const Member> members, std::size_t table_size) {
    struct Builder {
        std::uint32_t member;  // index into <members>
        std::uint64_t weight;
        std::uint64_t offset;
        std::uint64_t skip;
        std::uint64_t next;    // the member's next candidate slot
        std::uint64_t target = 0;
    };
    const std::uint64_t m = table_size;
    std::vector<std::uint32_t> order(members.size());
    std::iota(order.begin(), order.end(), 0u);
    std::sort(order.begin(), order.end(),
              [&](std::uint32_t a, std::uint32_t b) { return members[a].id < members[b].id; });
    std::vector<Builder> builders;
    std::uint64_t max_weight = 0;
    for (std::uint32_t k : order) {
        const std::string& id = members[k].id;
        if (members[k].weight == 0) continue;
        const std::uint64_t offset = hash_bytes(id) % m;
        const std::uint64_t skip = XXH3_64bits_withSeed(id.data(), id.size(), 1) % (m - 1) + 1;
        builders.push_back({k, members[k].weight, offset, skip, offset});
        max_weight = std::max<std::uint64_t>(max_weight, members[k].weight);
    }
    if (builders.empty()) return std::make_unique<Maglev>(std::vector<std::uint32_t>{}, members.size());

    constexpr std::uint32_t kEmpty = static_cast<std::uint32_t>(-1);
    std::vector<std::uint32_t> table(table_size, kEmpty);
    std::uint64_t filled = 0;
    for (std::uint64_t round = 0; filled < m; ++round) {
        for (Builder& b : builders) {
            if (filled == m) break;
            if (round * b.weight < b.target) continue;
            b.target += max_weight;
            while (table[b.next] != kEmpty) {
                b.next += b.skip;
                if (b.next >= m) b.next -= m;
            }
            table[b.next] = b.member;
            ++filled;
        }
    }
    return std::make_unique<Maglev>(std::move(table), members.size());
}

}  // namespace chash
