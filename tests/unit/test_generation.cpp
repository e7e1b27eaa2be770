#include <doctest/doctest.h>

#include "config/config.h"
#include "runtime/generation.h"

namespace {

std::shared_ptr<const config::Config> load(std::string_view text) {
    auto result = config::load_string(text, "g.toml");
    REQUIRE(std::holds_alternative<std::shared_ptr<const config::Config>>(result));
    return std::get<std::shared_ptr<const config::Config>>(result);
}

constexpr std::string_view kTwo = R"([[listener]]
listen = "127.0.0.1:8080"
[[pool]]
name = "main"
balance_factor = 1.25
[[pool.backend]]
address = "127.0.0.1:9001"
[[pool.backend]]
address = "127.0.0.1:9002"
)";

constexpr std::string_view kOneRenamed = R"([[listener]]
listen = "127.0.0.1:8080"
[[pool]]
name = "main"
[[pool.backend]]
address = "127.0.0.1:9002"
[[pool.backend]]
address = "127.0.0.1:9003"
)";

}  // namespace

TEST_CASE("a generation keeps the state of back ends that keep their id") {
    runtime::Generation first(load(kTwo), 1, nullptr);
    REQUIRE(first.pools().size() == 1);
    first.pools()[0].states[1]->active.store(7);
    runtime::Generation second(load(kOneRenamed), 2, &first);
    CHECK(second.number() == 2);
    // 127.0.0.1:9002 survives (same id): same state object, same count.
    CHECK(second.find_state("127.0.0.1:9002") == first.find_state("127.0.0.1:9002"));
    CHECK(second.find_state("127.0.0.1:9002")->active.load() == 7);
    // 9001 is gone; 9003 is new with a fresh state.
    CHECK(second.find_state("127.0.0.1:9001") == nullptr);
    REQUIRE(second.find_state("127.0.0.1:9003") != nullptr);
    CHECK(second.find_state("127.0.0.1:9003")->active.load() == 0);
    CHECK(second.pools()[0].total_weight == 2);
}

TEST_CASE("eligibility: health verdicts, passive cooldowns and bounded loads") {
    runtime::Generation g(load(kTwo), 1, nullptr);
    const runtime::PoolRuntime& pool = g.pools()[0];
    {
        runtime::PoolEligibility e(pool, 1000);
        CHECK(e.eligible(0));
        CHECK(e.eligible(1));
    }
    pool.states[0]->healthy.store(false);
    pool.states[1]->down_until_ms.store(2000);
    {
        runtime::PoolEligibility e(pool, 1000);
        CHECK_FALSE(e.eligible(0));
        CHECK_FALSE(e.eligible(1));
    }
    {
        runtime::PoolEligibility e(pool, 2000);  // the cooldown has passed
        CHECK(e.eligible(1));
    }
    pool.states[0]->healthy.store(true);
    // c = 1.25, 2 equal back ends: with 10 active on 0 and 0 on 1, the cap is
    // ceil(1.25 * 11 / 2) = 7: back end 0 is full, 1 is not.
    pool.states[0]->active.store(10);
    pool.states[1]->active.store(0);
    runtime::PoolEligibility e(pool, 5000);
    CHECK_FALSE(e.eligible(0));
    CHECK(e.eligible(1));
}

TEST_CASE("eligibility: an operator drain skips a back end, and a reload keeps it drained") {
    runtime::Generation g(load(kTwo), 1, nullptr);
    const runtime::PoolRuntime& pool = g.pools()[0];
    pool.states[0]->draining.store(true);
    pool.states[0]->drain_window_ms.store(5000);
    {
        runtime::PoolEligibility e(pool, 1000);
        CHECK_FALSE(e.eligible(0));
        CHECK(e.eligible(1));
    }
    // Every key goes to the other back end, as if the drained one were down.
    for (std::uint64_t hash = 0; hash < 1000; hash += 7) {
        CHECK(runtime::pick_backend(pool, hash * 0x9e3779b97f4a7c15ULL, chash::kNone, {}, 1000) == 1);
    }
    // A sticky cookie naming the drained back end does not pin a new session to it.
    CHECK(runtime::pick_backend(pool, 42, 0, {}, 1000) == 1);
    // 127.0.0.1:9002 survives a reload, drained or not; a drained one keeps its window.
    pool.states[1]->draining.store(true);
    runtime::Generation next(load(kOneRenamed), 2, &g);
    CHECK(next.find_state("127.0.0.1:9002")->draining.load());
    CHECK_FALSE(next.find_state("127.0.0.1:9003")->draining.load());
    // Both back ends of the first pool drained: no back end for any key.
    CHECK(runtime::pick_backend(pool, 42, chash::kNone, {}, 1000) == chash::kNone);
    pool.states[0]->draining.store(false);
    CHECK(runtime::pick_backend(pool, 42, chash::kNone, {}, 1000) == 0);
}
