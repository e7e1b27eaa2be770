// Per-key rate and concurrency limits with bounded memory, pure: the caller
// passes the time in, so tests and the event loop drive the same code. Not
// thread-safe: one instance per worker (or a lock around a shared one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

namespace net {

// Heterogeneous lookup, so a std::string_view key finds a std::string entry
// without allocating.
struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const noexcept {
        return std::hash<std::string_view>{}(key);
    }
};

// A token bucket per key: each key may take <burst> tokens at once and
// earns <rate_per_second> tokens per second back, up to <burst>.
//
// Implemented as GCRA (the "virtual scheduling" form of the generic cell
// rate algorithm, ITU-T I.371): each key stores one integer, the theoretical
// arrival time <tat> of its next token in microseconds. That is exact
// integer arithmetic (no drifting floating-point token counts), and a key
// whose <tat> is not in the future has a full bucket, which is exactly the
// state of a key we never saw: such entries can be forgotten without
// changing any answer.
//
// Memory: at most <max_keys> entries. Entries with a full bucket are
// dropped as they are met at the cold end of the least-recently-used list
// and by sweep(). When the table is full of keys that are still
// rate-limited and a new key arrives, the least recently used entry is
// evicted: that key gets a fresh (full) bucket on its next request, so a
// flood of distinct keys can only make the limiter more lenient towards
// the keys it has not seen for longest, never lock out a newcomer.
class TokenBucket {
public:
    struct Options {
        double rate_per_second = 10;  // > 0
        std::uint32_t burst = 20;     // >= 1
        std::size_t max_keys = 100000;  // >= 1
    };

    explicit TokenBucket(const Options& options);

    // Takes one token for <key> at <now_ms> (any monotonic millisecond
    // clock; it must not run backwards across calls). True when the
    // request may proceed.
    bool take(std::string_view key, std::int64_t now_ms);

    // Whole seconds until take(<key>) would succeed, rounded up: 0 when it
    // would succeed now. Meant for a Retry-After header (RFC 9110 §10.2.3).
    std::int64_t retry_after_seconds(std::string_view key, std::int64_t now_ms) const;

    // Drops every entry whose bucket is full at <now_ms>; a periodic timer
    // calls it so idle keys do not wait for table pressure to be freed.
    void sweep(std::int64_t now_ms);

    std::size_t size() const { return entries_.size(); }

private:
    struct Entry {
        std::int64_t tat_us = 0;
        std::list<std::string>::iterator lru;
    };

    void touch(Entry& entry);
    void erase_lru_back();

    std::int64_t interval_us_;   // time to earn one token
    std::int64_t tolerance_us_;  // (burst - 1) * interval: how far ahead tat may run
    std::size_t max_keys_;
    std::unordered_map<std::string, Entry, KeyHash, std::equal_to<>> entries_;
    std::list<std::string> lru_;  // front: most recently used
};

// Counts concurrent holders per key (open connections per client address)
// against <max_per_key>. acquire() and release() must pair up.
//
// Memory: an entry exists only while its count is positive, and at most
// <max_keys> entries exist. A count cannot be forgotten without breaking
// the limit, so when the table is full a new key is refused (fail closed):
// size max_keys well above the expected number of concurrent clients.
class CountingLimiter {
public:
    CountingLimiter(std::uint32_t max_per_key, std::size_t max_keys);

    // True (and the count taken) when <key> holds fewer than max_per_key
    // and, for a new key, the table has room.
    bool acquire(std::string_view key);
    // Gives back one count taken by a successful acquire().
    void release(std::string_view key);

    std::uint32_t count(std::string_view key) const;
    std::size_t size() const { return counts_.size(); }

private:
    std::uint32_t max_per_key_;
    std::size_t max_keys_;
    std::unordered_map<std::string, std::uint32_t, KeyHash, std::equal_to<>> counts_;
};

}  // namespace net
