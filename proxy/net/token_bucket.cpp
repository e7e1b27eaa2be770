#include "net/token_bucket.h"

#include <algorithm>
#include <cmath>

namespace net {

namespace {

// Times are microseconds; this bound keeps every sum below INT64_MAX for
// clocks up to ~70000 years.
constexpr std::int64_t max_span_us = INT64_MAX / 4;

std::int64_t interval_for(double rate_per_second) {
    if (!(rate_per_second > 1e-6)) return max_span_us;  // the config rejects this: no refill
    double us = std::round(1e6 / rate_per_second);
    return std::clamp<std::int64_t>(static_cast<std::int64_t>(us), 1, max_span_us);
}

std::int64_t tolerance_for(std::int64_t interval_us, std::uint32_t burst) {
    std::int64_t extra = std::max<std::uint32_t>(burst, 1) - 1;
    if (extra != 0 && interval_us > max_span_us / extra) return max_span_us;
    return interval_us * extra;
}

}  // namespace

TokenBucket::TokenBucket(const Options& options)
    : interval_us_(interval_for(options.rate_per_second)),
      tolerance_us_(tolerance_for(interval_us_, options.burst)),
      max_keys_(std::max<std::size_t>(options.max_keys, 1)) {}

void TokenBucket::touch(Entry& entry) { lru_.splice(lru_.begin(), lru_, entry.lru); }

void TokenBucket::erase_lru_back() {
    entries_.erase(lru_.back());
    lru_.pop_back();
}

bool TokenBucket::take(std::string_view key, std::int64_t now_ms) {
    const std::int64_t now = now_ms * 1000;
    // Amortised cleanup: the coldest entry goes once its bucket is full.
    if (!lru_.empty() && lru_.back() != key) {
        auto cold = entries_.find(lru_.back());
        if (cold->second.tat_us <= now) erase_lru_back();
    }
    auto it = entries_.find(key);
    if (it == entries_.end()) {
        if (entries_.size() >= max_keys_) erase_lru_back();
        lru_.emplace_front(key);
        it = entries_.emplace(lru_.front(), Entry{now, lru_.begin()}).first;
    } else {
        touch(it->second);
    }
    Entry& entry = it->second;
    std::int64_t tat = std::max(entry.tat_us, now);
    if (tat - now > tolerance_us_) return false;
    entry.tat_us = tat + interval_us_;
    return true;
}

std::int64_t TokenBucket::retry_after_seconds(std::string_view key, std::int64_t now_ms) const {
    auto it = entries_.find(key);
    if (it == entries_.end()) return 0;
    const std::int64_t now = now_ms * 1000;
    std::int64_t wait_us = it->second.tat_us - tolerance_us_ - now;
    if (wait_us <= 0) return 0;
    return (wait_us + 999999) / 1000000;
}

void TokenBucket::sweep(std::int64_t now_ms) {
    const std::int64_t now = now_ms * 1000;
    for (auto it = lru_.begin(); it != lru_.end();) {
        auto entry = entries_.find(*it);
        if (entry->second.tat_us <= now) {
            entries_.erase(entry);
            it = lru_.erase(it);
        } else {
            ++it;
        }
    }
}

CountingLimiter::CountingLimiter(std::uint32_t max_per_key, std::size_t max_keys)
    : max_per_key_(max_per_key), max_keys_(max_keys) {}

bool CountingLimiter::acquire(std::string_view key) {
    auto it = counts_.find(key);
    if (it == counts_.end()) {
        if (max_per_key_ == 0 || counts_.size() >= max_keys_) return false;
        counts_.emplace(std::string(key), 1);
        return true;
    }
    if (it->second >= max_per_key_) return false;
    ++it->second;
    return true;
}

void CountingLimiter::release(std::string_view key) {
    auto it = counts_.find(key);
    if (it == counts_.end()) return;
    if (--it->second == 0) counts_.erase(it);
}

std::uint32_t CountingLimiter::count(std::string_view key) const {
    auto it = counts_.find(key);
    return it == counts_.end() ? 0 : it->second;
}

}  // namespace net
