// A worker's idle keep-alive connections to back ends, for plain HTTP
// requests: a connection whose exchange ended cleanly is parked here and the
// next request to the same back end takes it instead of connecting. Bounded
// per back end; an idle connection is dropped when its time is up, when the
// back end closes it, or when the back end sends anything (an idle
// connection has no request outstanding, so bytes are a protocol error).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>

#include <event2/bufferevent.h>

namespace runtime {

class UpstreamPool {
public:
    explicit UpstreamPool(std::size_t max_idle_per_backend) : max_idle_(max_idle_per_backend) {}
    ~UpstreamPool();
    UpstreamPool(const UpstreamPool&) = delete;
    UpstreamPool& operator=(const UpstreamPool&) = delete;

    // The most recently parked connection for <key> (back-end id and
    // address), or nullptr. The caller owns it: no callbacks, reading
    // disabled, no timeouts.
    bufferevent* take(const std::string& key);

    // Parks <bev> (its input and output empty) for at most <idle_ms>; takes
    // ownership. When <key> already has the maximum parked, the oldest goes.
    void put(const std::string& key, bufferevent* bev, std::int64_t idle_ms);

    // Closes every parked connection (shutdown).
    void clear();

    // Closes the parked connections to the back end <id> (keys "<id>\n...":
    // the operator drained it).
    void drop_backend(const std::string& id);

    std::size_t idle() const { return count_; }

private:
    struct Entry {
        UpstreamPool* pool;
        std::string key;
        bufferevent* bev;
    };

    static void on_read(bufferevent* bev, void* entry);
    static void on_event(bufferevent* bev, short what, void* entry);
    void drop(Entry* entry);

    std::size_t max_idle_;
    std::size_t count_ = 0;
    std::unordered_map<std::string, std::deque<Entry*>> idle_;  // oldest first
};

}  // namespace runtime
