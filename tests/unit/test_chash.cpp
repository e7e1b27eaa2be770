// Properties both consistent-hashing tables must have, over random
// configurations drawn from a fixed-seed generator; hash golden vectors;
// bounded loads.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <stdexcept>

#include "chash_support.h"

using chash::Algorithm;
using chash::kNone;
using chash::Member;
using namespace chash_test;

namespace {

constexpr Algorithm kAlgorithms[] = {Algorithm::Ring, Algorithm::Maglev};

const char* name(Algorithm a) { return a == Algorithm::Ring ? "ring" : "maglev"; }

}  // namespace

TEST_CASE("hash_bytes: XXH3-64 seed 0 golden vectors") {
    // Changing these values (another hash, another seed) re-pins every user
    // of every deployment to a different back end at upgrade time.
    CHECK(chash::hash_bytes("") == 0x2d06800538d394c2ULL);  // XXH3_64bits("") per the xxHash test suite
    CHECK(chash::hash_bytes("a") == 0xe6c632b61e964e1fULL);
    CHECK(chash::hash_bytes("10.0.0.1") == 0xb61d99f8e56b6646ULL);
    CHECK(chash::hash_bytes("user-42") == 0x50fe4b21cf7b09cdULL);
    CHECK(chash::hash_bytes("10.0.0.1:8080-0") == 0xc826d9c0a82f4ff4ULL);
}

TEST_CASE("make_picker rejects duplicate ids and non-prime Maglev tables") {
    const std::vector<Member> dup = {{"a", 1}, {"b", 1}, {"a", 2}};
    for (Algorithm alg : kAlgorithms) {
        CAPTURE(name(alg));
        CHECK_THROWS_WITH_AS(chash::make_picker(alg, dup), "duplicate back-end id \"a\"", std::invalid_argument);
    }
    const std::vector<Member> ok = {{"a", 1}, {"b", 1}};
    CHECK_THROWS_WITH_AS(chash::make_picker(Algorithm::Maglev, ok, 65536), "maglev table size 65536 is not a prime",
                         std::invalid_argument);
    for (std::size_t bad : {0, 1, 4, 9, 65535}) CHECK_THROWS(chash::make_picker(Algorithm::Maglev, ok, bad));
    for (std::size_t good : {2, 3, 7, 251, 65537}) CHECK(chash::make_picker(Algorithm::Maglev, ok, good)->size() == 2);
}

TEST_CASE("degenerate configurations") {
    chash::AllEligible all;
    for (Algorithm alg : kAlgorithms) {
        CAPTURE(name(alg));
        auto empty = chash::make_picker(alg, {});
        CHECK(empty->size() == 0);
        CHECK(empty->pick(123, 0, all) == kNone);

        const std::vector<Member> one = {{"only", 1}};
        auto single = chash::make_picker(alg, one);
        for (std::uint64_t k : {std::uint64_t{0}, std::uint64_t{42}, ~std::uint64_t{0}}) {
            CHECK(single->pick(k, 0, all) == 0);
            CHECK(single->pick(k, 1, all) == kNone);
            CHECK(single->pick(k, 0, AllBut({0})) == kNone);
        }

        // Weight 0: present in the member list (indices unchanged) but never picked.
        const std::vector<Member> zero = {{"a", 1}, {"b", 0}, {"c", 1}};
        auto picker = chash::make_picker(alg, zero);
        CHECK(picker->size() == 3);
        std::mt19937_64 rng(kSeed);
        for (std::uint64_t k : random_keys(rng, 2000)) {
            const auto order = preference(*picker, k);
            CHECK(order.size() == 2);
            CHECK(std::find(order.begin(), order.end(), 1u) == order.end());
        }
    }
}

TEST_CASE("determinism: independent builds agree on every key and attempt") {
    std::mt19937_64 rng(kSeed);
    for (Algorithm alg : kAlgorithms) {
        for (int config = 0; config < 10; ++config) {
            CAPTURE(name(alg));
            CAPTURE(config);
            const auto members = random_members(rng, 2 + rng() % 20, 3);
            auto a = chash::make_picker(alg, members);
            auto b = chash::make_picker(alg, std::vector<Member>(members));
            chash::AllEligible all;
            for (std::uint64_t k : random_keys(rng, 2000)) {
                for (unsigned attempt = 0; attempt < 3; ++attempt) {
                    REQUIRE(a->pick(k, attempt, all) == b->pick(k, attempt, all));
                }
            }
        }
    }
}

TEST_CASE("order independence: shuffled members give the same id for every key") {
    std::mt19937_64 rng(kSeed + 1);
    for (Algorithm alg : kAlgorithms) {
        for (int config = 0; config < 15; ++config) {
            CAPTURE(name(alg));
            CAPTURE(config);
            const auto members = random_members(rng, 2 + rng() % 30, 4);
            auto shuffled = members;
            std::shuffle(shuffled.begin(), shuffled.end(), rng);
            auto a = chash::make_picker(alg, members);
            auto b = chash::make_picker(alg, shuffled);
            for (std::uint64_t k : random_keys(rng, 3000)) {
                const auto pa = preference(*a, k);
                const auto pb = preference(*b, k);
                REQUIRE(pa.size() == pb.size());
                for (std::size_t i = 0; i < pa.size(); ++i) REQUIRE(members[pa[i]].id == shuffled[pb[i]].id);
            }
        }
    }
}

TEST_CASE("weights: a back end of weight 2 gets twice the keys of weight 1, within 10%") {
    // Maglev divides its table by weight, so each back end is checked alone.
    // A ring gives each back end a share that varies by ~1/sqrt(points), so it
    // is checked on the keys per unit of weight of all weight-2 back ends
    // against all weight-1 back ends.
    std::mt19937_64 rng(kSeed + 2);
    const auto keys = random_keys(rng, 200'000);
    chash::AllEligible all;
    for (Algorithm alg : kAlgorithms) {
        for (int config = 0; config < 5; ++config) {
            CAPTURE(name(alg));
            CAPTURE(config);
            auto members = random_members(rng, 10);
            for (std::size_t i = 0; i < members.size(); i += 2) members[i].weight = 2;
            auto picker = chash::make_picker(alg, members);
            std::vector<double> load(members.size());
            for (std::uint64_t k : keys) ++load[picker->pick(k, 0, all)];
            double per_weight[3] = {0, 0, 0};
            for (std::size_t i = 0; i < members.size(); ++i) per_weight[members[i].weight] += load[i] / 5;
            CHECK(per_weight[2] / per_weight[1] == doctest::Approx(2.0).epsilon(0.10));
            if (alg == Algorithm::Maglev) {
                for (std::size_t i = 0; i < members.size(); ++i) {
                    const double expected = static_cast<double>(keys.size()) * members[i].weight / 15.0;
                    CHECK(load[i] == doctest::Approx(expected).epsilon(0.10));
                }
            }
        }
    }
}

TEST_CASE("failover order: distinct, complete, stable") {
    std::mt19937_64 rng(kSeed + 3);
    for (Algorithm alg : kAlgorithms) {
        for (int config = 0; config < 10; ++config) {
            CAPTURE(name(alg));
            CAPTURE(config);
            const auto members = random_members(rng, 1 + rng() % 12, 3);
            auto picker = chash::make_picker(alg, members);
            for (std::uint64_t k : random_keys(rng, 1000)) {
                const auto order = preference(*picker, k);
                // Every back end appears exactly once: attempt k+1 differs from 0..k.
                REQUIRE(order.size() == members.size());
                REQUIRE(std::set<std::size_t>(order.begin(), order.end()).size() == members.size());
                REQUIRE(preference(*picker, k) == order);
                REQUIRE(picker->pick(k, static_cast<unsigned>(members.size()), chash::AllEligible{}) == kNone);
            }
        }
    }
}

TEST_CASE("ineligible back ends: a key takes the next eligible one in its order, others stay") {
    std::mt19937_64 rng(kSeed + 4);
    chash::AllEligible all;
    for (Algorithm alg : kAlgorithms) {
        for (int config = 0; config < 10; ++config) {
            CAPTURE(name(alg));
            CAPTURE(config);
            const auto members = random_members(rng, 2 + rng() % 12, 3);
            auto picker = chash::make_picker(alg, members);
            std::set<std::size_t> down;
            for (std::size_t i = 0; i < members.size(); ++i) {
                if (rng() % 3 == 0) down.insert(i);
            }
            const AllBut eligibility(down);
            const std::size_t one_down = rng() % members.size();
            const AllBut owner_down({one_down});
            for (std::uint64_t k : random_keys(rng, 1000)) {
                const auto order = preference(*picker, k);
                // One back end down: only its keys move, each to its attempt-1 member.
                const std::size_t expected = order[0] == one_down ? order[1] : order[0];
                REQUIRE(picker->pick(k, 0, owner_down) == expected);
                // Several down: the eligible members of the order, in the same order.
                std::vector<std::size_t> filtered;
                for (std::size_t m : order) {
                    if (!down.count(m)) filtered.push_back(m);
                }
                REQUIRE(preference(*picker, k, eligibility) == filtered);
                if (!down.count(order[0])) REQUIRE(picker->pick(k, 0, eligibility) == order[0]);
            }
            // Everyone down: every attempt ends, with kNone.
            std::set<std::size_t> everyone;
            for (std::size_t i = 0; i < members.size(); ++i) everyone.insert(i);
            CHECK(picker->pick(rng(), 0, AllBut(everyone)) == kNone);
            CHECK(picker->pick(rng(), 0, all) != kNone);
        }
    }
}

TEST_CASE("under_load_bound: active < ceil(c * (total_active + 1) * weight / total_weight)") {
    // 1.25 * 8 / 4 = 2.5 -> cap 3
    CHECK(chash::under_load_bound(2, 7, 1, 4, 1.25));
    CHECK_FALSE(chash::under_load_bound(3, 7, 1, 4, 1.25));
    // 1.25 * 8 * 2 / 4 = 5 exactly -> cap 5
    CHECK(chash::under_load_bound(4, 7, 2, 4, 1.25));
    CHECK_FALSE(chash::under_load_bound(5, 7, 2, 4, 1.25));
    // An idle pool: 1.25 * 1 / 10 -> cap 1, so every back end takes a first session.
    CHECK(chash::under_load_bound(0, 0, 1, 10, 1.25));
    CHECK_FALSE(chash::under_load_bound(1, 0, 1, 10, 1.25));
    // c = 2, 100 sessions over 4 equal back ends: cap ceil(2 * 101 / 4) = 51
    CHECK(chash::under_load_bound(50, 100, 1, 4, 2.0));
    CHECK_FALSE(chash::under_load_bound(51, 100, 1, 4, 2.0));
    // Weight 0, or no weight at all: no capacity.
    CHECK_FALSE(chash::under_load_bound(0, 5, 0, 4, 1.25));
    CHECK_FALSE(chash::under_load_bound(0, 5, 1, 0, 1.25));
}

TEST_CASE("bounded loads (c = 1.25): no back end passes ceil(c * its weighted mean)") {
    // Sessions arrive with random keys and leave at random. After an arrival
    // the back end that took it holds at most ceil(c * T * w / W) sessions (T
    // counting the new one). While only arrivals happen, that holds for every
    // back end; a departure lowers the mean under the others, so afterwards
    // only the receiving back end is checked.
    constexpr double c = 1.25;
    std::mt19937_64 rng(kSeed + 5);
    for (Algorithm alg : kAlgorithms) {
        for (int config = 0; config < 4; ++config) {
            CAPTURE(name(alg));
            CAPTURE(config);
            const auto members = random_members(rng, 3 + rng() % 8, 3);
            std::uint64_t total_weight = 0;
            for (const auto& m : members) total_weight += m.weight;
            auto picker = chash::make_picker(alg, members);
            std::vector<std::uint64_t> active(members.size());
            std::vector<std::uint64_t> unbounded(members.size());
            std::vector<std::size_t> sessions;
            const UnderLoadBound bound(active, members, c);
            auto cap = [&](std::size_t i, std::uint64_t total) {
                return static_cast<std::uint64_t>(std::ceil(c * static_cast<double>(total) * members[i].weight /
                                                            static_cast<double>(total_weight)));
            };
            bool unbounded_exceeded = false;
            for (int step = 0; step < 6000; ++step) {
                const bool arrivals_only = step < 1500;
                if (!arrivals_only && !sessions.empty() && rng() % 2 == 0) {
                    const std::size_t s = rng() % sessions.size();
                    --active[sessions[s]];
                    sessions[s] = sessions.back();
                    sessions.pop_back();
                    continue;
                }
                const std::uint64_t key = rng();
                const std::size_t m = picker->pick(key, 0, bound);
                REQUIRE(m != kNone);
                ++active[m];
                sessions.push_back(m);
                REQUIRE(active[m] <= cap(m, sessions.size()));
                if (arrivals_only) {
                    for (std::size_t i = 0; i < members.size(); ++i) REQUIRE(active[i] <= cap(i, sessions.size()));
                    // The same arrivals without the bound, to show it mattered.
                    const std::size_t u = picker->pick(key, 0, chash::AllEligible{});
                    if (++unbounded[u] > cap(u, sessions.size())) unbounded_exceeded = true;
                }
            }
            CHECK(unbounded_exceeded);
        }
    }
}
