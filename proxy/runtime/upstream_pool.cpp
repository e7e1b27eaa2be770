#include "runtime/upstream_pool.h"

#include <algorithm>

#include <event2/event.h>

namespace runtime {

UpstreamPool::~UpstreamPool() { clear(); }

bufferevent* UpstreamPool::take(const std::string& key) {
    auto it = idle_.find(key);
    if (it == idle_.end() || it->second.empty()) return nullptr;
    Entry* entry = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) idle_.erase(it);
    --count_;
    bufferevent* bev = entry->bev;
    delete entry;
    bufferevent_disable(bev, EV_READ);
    bufferevent_set_timeouts(bev, nullptr, nullptr);
    bufferevent_setcb(bev, nullptr, nullptr, nullptr, nullptr);
    return bev;
}

void UpstreamPool::put(const std::string& key, bufferevent* bev, std::int64_t idle_ms) {
    if (max_idle_ == 0 || idle_ms <= 0) {
        bufferevent_free(bev);
        return;
    }
    if (auto it = idle_.find(key); it != idle_.end() && it->second.size() >= max_idle_) drop(it->second.front());
    auto* entry = new Entry{this, key, bev};
    idle_[key].push_back(entry);
    ++count_;
    bufferevent_setcb(bev, &UpstreamPool::on_read, nullptr, &UpstreamPool::on_event, entry);
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    // A read timeout is the idle timer: it fires only while nothing arrives.
    timeval tv{static_cast<time_t>(idle_ms / 1000), static_cast<suseconds_t>((idle_ms % 1000) * 1000)};
    bufferevent_set_timeouts(bev, &tv, nullptr);
    bufferevent_enable(bev, EV_READ);
}

void UpstreamPool::clear() {
    for (auto& [key, list] : idle_) {
        for (Entry* entry : list) {
            bufferevent_free(entry->bev);
            delete entry;
        }
    }
    idle_.clear();
    count_ = 0;
}

void UpstreamPool::drop_backend(const std::string& id) {
    const std::string prefix = id + '\n';
    for (auto it = idle_.begin(); it != idle_.end();) {
        if (it->first.compare(0, prefix.size(), prefix) != 0) {
            ++it;
            continue;
        }
        for (Entry* entry : it->second) {
            bufferevent_free(entry->bev);
            delete entry;
            --count_;
        }
        it = idle_.erase(it);
    }
}

void UpstreamPool::on_read(bufferevent*, void* entry) {
    auto* e = static_cast<Entry*>(entry);
    e->pool->drop(e);
}

void UpstreamPool::on_event(bufferevent*, short, void* entry) {
    auto* e = static_cast<Entry*>(entry);
    e->pool->drop(e);
}

void UpstreamPool::drop(Entry* entry) {
    auto it = idle_.find(entry->key);
    if (it != idle_.end()) {
        auto& list = it->second;
        list.erase(std::remove(list.begin(), list.end(), entry), list.end());
        if (list.empty()) idle_.erase(it);
    }
    --count_;
    bufferevent_free(entry->bev);
    delete entry;
}

}  // namespace runtime
