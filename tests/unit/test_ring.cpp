// The ketama-style ring (proxy/balance/ring.cpp): its definition against a
// direct computation, golden vectors, and the exact minimal-disruption
// guarantees a ring gives.
#include <doctest/doctest.h>

#include <algorithm>
#include <utility>

#include "chash_support.h"

using chash::Algorithm;
using chash::kNone;
using chash::Member;
using namespace chash_test;

namespace {

// The ring written out plainly: every point hash_bytes(id + "-" + i) for
// i < 320 * weight, sorted by (hash, id); a key's order is the distinct ids
// met from the first point >= its hash, wrapping.
std::vector<std::string> reference_order(const std::vector<Member>& members, std::uint64_t key) {
    std::vector<std::pair<std::uint64_t, std::string>> points;
    for (const Member& m : members) {
        for (std::uint32_t i = 0; i < 320 * m.weight; ++i) {
            points.emplace_back(chash::hash_bytes(m.id + "-" + std::to_string(i)), m.id);
        }
    }
    std::sort(points.begin(), points.end());
    std::size_t start = 0;
    while (start < points.size() && points[start].first < key) ++start;
    std::vector<std::string> order;
    for (std::size_t d = 0; d < points.size(); ++d) {
        const std::string& id = points[(start + d) % points.size()].second;
        if (std::find(order.begin(), order.end(), id) == order.end()) order.push_back(id);
    }
    return order;
}

std::vector<std::string> ids(const std::vector<Member>& members, const std::vector<std::size_t>& order) {
    std::vector<std::string> out;
    for (std::size_t i : order) out.push_back(members[i].id);
    return out;
}

}  // namespace

TEST_CASE("ring: golden vectors for a fixed five-member pool") {
    // Changing these re-pins every user in production: the ring's point
    // derivation, point count or tie-break has changed.
    const std::vector<Member> members = {
        {"10.0.0.1:8080", 1}, {"10.0.0.2:8080", 1}, {"10.0.0.3:8080", 2}, {"10.0.0.4:8080", 1}, {"10.0.0.5:8080", 1}};
    struct Golden {
        const char* key;
        std::size_t attempt0, attempt1, attempt4;
    };
    const Golden golden[] = {
        {"alice", 1, 2, 4}, {"bob", 3, 2, 1},   {"carol", 2, 0, 1}, {"dave", 2, 0, 3}, {"erin", 3, 2, 0},
        {"frank", 3, 0, 1}, {"grace", 2, 0, 4}, {"heidi", 2, 0, 3}, {"ivan", 2, 1, 4}, {"judy", 0, 1, 3},
    };
    auto ring = chash::make_picker(Algorithm::Ring, members);
    chash::AllEligible all;
    for (const Golden& g : golden) {
        CAPTURE(g.key);
        const std::uint64_t h = chash::hash_bytes(g.key);
        CHECK(ring->pick(h, 0, all) == g.attempt0);
        CHECK(ring->pick(h, 1, all) == g.attempt1);
        CHECK(ring->pick(h, 4, all) == g.attempt4);
    }
}

TEST_CASE("ring: pick follows the ring's definition, at and around every point edge") {
    std::mt19937_64 rng(kSeed + 10);
    for (int config = 0; config < 4; ++config) {
        CAPTURE(config);
        const auto members = random_members(rng, 1 + rng() % 4, 2);
        auto ring = chash::make_picker(Algorithm::Ring, members);
        std::vector<std::uint64_t> keys = {0, 1, ~std::uint64_t{0}, ~std::uint64_t{0} - 1};
        for (int i = 0; i < 30; ++i) {
            // A point itself, and its neighbours on either side.
            const Member& m = members[rng() % members.size()];
            const std::uint64_t p = chash::hash_bytes(m.id + "-" + std::to_string(rng() % (320 * m.weight)));
            keys.insert(keys.end(), {p - 1, p, p + 1});
        }
        for (std::uint64_t k : random_keys(rng, 30)) keys.push_back(k);
        for (std::uint64_t k : keys) {
            CAPTURE(k);
            CHECK(ids(members, preference(*ring, k)) == reference_order(members, k));
        }
    }
}

TEST_CASE("ring: removing a back end moves exactly its keys, as if it were ineligible") {
    std::mt19937_64 rng(kSeed + 11);
    for (int config = 0; config < 12; ++config) {
        CAPTURE(config);
        const auto members = random_members(rng, 2 + rng() % 30, 3);
        const std::size_t gone = rng() % members.size();
        auto smaller = members;
        smaller.erase(smaller.begin() + static_cast<std::ptrdiff_t>(gone));
        auto before = chash::make_picker(Algorithm::Ring, members);
        auto after = chash::make_picker(Algorithm::Ring, smaller);
        const AllBut without_gone({gone});
        std::size_t moved = 0;
        for (std::uint64_t k : random_keys(rng, 3000)) {
            const auto old_order = ids(members, preference(*before, k, without_gone));
            REQUIRE(ids(smaller, preference(*after, k)) == old_order);
            moved += before->pick(k, 0, chash::AllEligible{}) == gone;
        }
        CHECK(moved > 0);
    }
}

TEST_CASE("ring: adding a back end or raising a weight moves keys only onto that back end") {
    std::mt19937_64 rng(kSeed + 12);
    chash::AllEligible all;
    for (int config = 0; config < 12; ++config) {
        CAPTURE(config);
        const auto members = random_members(rng, 2 + rng() % 30, 3);
        auto larger = members;
        larger.push_back(random_members(rng, 1)[0]);
        auto heavier = members;
        const std::size_t grown = rng() % members.size();
        heavier[grown].weight += 1 + static_cast<std::uint32_t>(rng() % 3);
        auto base = chash::make_picker(Algorithm::Ring, members);
        auto added = chash::make_picker(Algorithm::Ring, larger);
        auto grew = chash::make_picker(Algorithm::Ring, heavier);
        std::size_t to_new = 0, to_grown = 0;
        for (std::uint64_t k : random_keys(rng, 3000)) {
            const std::size_t owner = base->pick(k, 0, all);
            const std::size_t a = added->pick(k, 0, all);
            if (a != owner) {
                REQUIRE(a == members.size());
                ++to_new;
            }
            const std::size_t g = grew->pick(k, 0, all);
            if (g != owner) {
                REQUIRE(g == grown);
                ++to_grown;
            }
        }
        CHECK(to_new > 0);
        CHECK(to_grown > 0);
    }
}
