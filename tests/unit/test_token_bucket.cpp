#include <doctest/doctest.h>

#include <string>

#include "net/token_bucket.h"

namespace {

int take_many(net::TokenBucket& bucket, std::string_view key, std::int64_t now_ms, int attempts) {
    int granted = 0;
    for (int i = 0; i < attempts; ++i) granted += bucket.take(key, now_ms) ? 1 : 0;
    return granted;
}

}  // namespace

TEST_CASE("a new key may take a full burst, then one token per interval") {
    net::TokenBucket bucket({.rate_per_second = 2, .burst = 5, .max_keys = 100});
    CHECK(take_many(bucket, "a", 1000, 10) == 5);
    CHECK(bucket.retry_after_seconds("a", 1000) == 1);  // next token at 1500 ms
    CHECK_FALSE(bucket.take("a", 1499));
    CHECK(bucket.take("a", 1500));
    CHECK_FALSE(bucket.take("a", 1500));
    CHECK(bucket.take("a", 2000));
    // Idle for long enough refills to exactly <burst>, never more.
    CHECK(take_many(bucket, "a", 100000, 10) == 5);
    // Keys are independent.
    CHECK(take_many(bucket, "b", 100000, 10) == 5);
}

TEST_CASE("sustained rate over a long run equals rate_per_second") {
    net::TokenBucket bucket({.rate_per_second = 10, .burst = 1, .max_keys = 10});
    int granted = 0;
    // One attempt every millisecond for 60 s.
    for (std::int64_t t = 0; t < 60000; ++t) granted += bucket.take("k", t) ? 1 : 0;
    CHECK(granted == 600);
}

TEST_CASE("fractional rates are exact in integer microseconds") {
    net::TokenBucket bucket({.rate_per_second = 0.5, .burst = 1, .max_keys = 10});
    CHECK(bucket.take("k", 0));
    CHECK_FALSE(bucket.take("k", 1999));
    CHECK(bucket.retry_after_seconds("k", 1999) == 1);
    CHECK(bucket.retry_after_seconds("k", 0) == 2);
    CHECK(bucket.take("k", 2000));
}

TEST_CASE("retry_after_seconds rounds up and is zero when a take would succeed") {
    net::TokenBucket bucket({.rate_per_second = 0.1, .burst = 2, .max_keys = 10});
    CHECK(bucket.retry_after_seconds("k", 0) == 0);  // unknown key
    CHECK(bucket.take("k", 0));
    CHECK(bucket.retry_after_seconds("k", 0) == 0);  // one token left
    CHECK(bucket.take("k", 0));
    CHECK_FALSE(bucket.take("k", 0));
    CHECK(bucket.retry_after_seconds("k", 0) == 10);
    CHECK(bucket.retry_after_seconds("k", 1) == 10);     // 9.999 s rounds up
    CHECK(bucket.retry_after_seconds("k", 9000) == 1);
    CHECK(bucket.retry_after_seconds("k", 9999) == 1);
    CHECK(bucket.retry_after_seconds("k", 10000) == 0);
    CHECK(bucket.take("k", 10000));
}

TEST_CASE("denied attempts do not consume tokens") {
    net::TokenBucket bucket({.rate_per_second = 1, .burst = 1, .max_keys = 10});
    CHECK(bucket.take("k", 0));
    for (int t = 1; t < 1000; t += 10) CHECK_FALSE(bucket.take("k", t));
    CHECK(bucket.take("k", 1000));
}

TEST_CASE("memory is bounded: full buckets are forgotten, and LRU eviction when full") {
    net::TokenBucket bucket({.rate_per_second = 1, .burst = 1, .max_keys = 3});
    CHECK(bucket.take("a", 0));
    CHECK(bucket.take("b", 0));
    CHECK(bucket.take("c", 0));
    CHECK(bucket.size() == 3);
    // Table full of limited keys: "a" (least recently used) is evicted.
    CHECK(bucket.take("d", 10));
    CHECK(bucket.size() == 3);
    CHECK(bucket.take("a", 20));          // forgotten, so a fresh bucket
    CHECK_FALSE(bucket.take("c", 20));    // still remembered and limited
    CHECK_FALSE(bucket.take("d", 20));

    // Entries whose bucket has refilled are equivalent to unknown keys.
    bucket.sweep(500);
    CHECK(bucket.size() == 3);
    bucket.sweep(5000);
    CHECK(bucket.size() == 0);

    // The cold end is trimmed as keys come and go, without sweep().
    net::TokenBucket churn({.rate_per_second = 1, .burst = 1, .max_keys = 1000});
    for (int i = 0; i < 100; ++i) CHECK(churn.take("key" + std::to_string(i), i * 2000));
    CHECK(churn.size() <= 2);
}

TEST_CASE("a limiter is never stricter than its options when keys churn past max_keys") {
    net::TokenBucket bucket({.rate_per_second = 1, .burst = 2, .max_keys = 8});
    // 100 distinct keys, each within its burst: none may be refused.
    for (int i = 0; i < 100; ++i) {
        CHECK(bucket.take("k" + std::to_string(i), 0));
        CHECK(bucket.take("k" + std::to_string(i), 0));
    }
    CHECK(bucket.size() == 8);
}

TEST_CASE("counting limiter caps concurrent holders per key and frees empty keys") {
    net::CountingLimiter limiter(2, 2);
    CHECK(limiter.acquire("a"));
    CHECK(limiter.acquire("a"));
    CHECK_FALSE(limiter.acquire("a"));
    CHECK(limiter.count("a") == 2);
    CHECK(limiter.acquire("b"));
    // Table full: a new key is refused (a count cannot be forgotten).
    CHECK_FALSE(limiter.acquire("c"));
    limiter.release("a");
    CHECK(limiter.acquire("a"));
    limiter.release("b");
    CHECK(limiter.size() == 1);
    CHECK(limiter.count("b") == 0);
    CHECK(limiter.acquire("c"));
    // Releasing an unknown key is harmless.
    limiter.release("zzz");
    CHECK(limiter.size() == 2);

    net::CountingLimiter closed(0, 10);
    CHECK_FALSE(closed.acquire("a"));
}
