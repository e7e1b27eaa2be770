#include "net/tls_session.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

namespace tls {

std::variant<TicketKey, std::string> parse_ticket_key(std::string_view bytes) {
    if (bytes.size() != TicketKey::kFileSize) {
        return "must be exactly 80 bytes (made with `openssl rand 80`), got " + std::to_string(bytes.size());
    }
    // nginx's order for 80-byte keys: name, HMAC secret, AES key
    // (ngx_ssl_session_ticket_keys in src/event/ngx_event_openssl.c).
    TicketKey key;
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
    std::memcpy(key.name.data(), p, key.name.size());
    std::memcpy(key.hmac.data(), p + 16, key.hmac.size());
    std::memcpy(key.aes.data(), p + 48, key.aes.size());
    return key;
}

std::variant<TicketKey, std::string> read_ticket_key_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return path + ": cannot open ticket key file: " + std::strerror(errno);
    // One byte more than a key: enough to tell "too long" without reading a huge file.
    std::string bytes(TicketKey::kFileSize + 1, '\0');
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    bytes.resize(static_cast<std::size_t>(in.gcount()));
    if (in.bad()) return path + ": cannot read ticket key file";
    auto key = parse_ticket_key(bytes);
    OPENSSL_cleanse(bytes.data(), bytes.size());
    if (auto* problem = std::get_if<std::string>(&key)) {
        if (bytes.size() > TicketKey::kFileSize) *problem = "must be exactly 80 bytes (made with `openssl rand 80`), got more";
        return path + ": ticket key file " + *problem;
    }
    return key;
}

TicketKey random_ticket_key() {
    TicketKey key;
    // RAND_bytes fails only without an entropy source; a zero key would then
    // still be unique per process only by chance, so abort rather than guess.
    if (RAND_bytes(key.name.data(), key.name.size()) != 1 || RAND_bytes(key.hmac.data(), key.hmac.size()) != 1 ||
        RAND_bytes(key.aes.data(), key.aes.size()) != 1) {
        std::abort();
    }
    return key;
}

TicketKeyRing::TicketKeyRing(std::chrono::seconds rotate_every, std::size_t keep_previous, std::int64_t now_s)
    : rotate_every_(rotate_every), keep_previous_(keep_previous), rotated_at_s_(now_s) {
    keys_.push_front(random_ticket_key());
}

TicketKeyRing::TicketKeyRing(const TicketKey& key) : keep_previous_(1) { keys_.push_front(key); }

void TicketKeyRing::adopt(const TicketKey& key) {
    std::lock_guard lock(mutex_);
    if (keys_.front() == key) return;
    keys_.erase(std::remove(keys_.begin(), keys_.end(), key), keys_.end());
    keys_.push_front(key);
    while (keys_.size() > keep_previous_ + 1) keys_.pop_back();
}

void TicketKeyRing::cover(std::chrono::seconds lifetime) {
    if (rotate_every_.count() == 0) return;
    std::lock_guard lock(mutex_);
    const auto rotations = static_cast<std::size_t>((lifetime.count() + rotate_every_.count() - 1) / rotate_every_.count());
    keep_previous_ = std::max(keep_previous_, rotations);
}

TicketKey TicketKeyRing::encrypting(std::int64_t now_s) {
    std::lock_guard lock(mutex_);
    if (rotate_every_.count() > 0 && now_s - rotated_at_s_ >= rotate_every_.count()) {
        keys_.push_front(random_ticket_key());
        rotated_at_s_ = now_s;
        while (keys_.size() > keep_previous_ + 1) {
            OPENSSL_cleanse(&keys_.back(), sizeof(TicketKey));
            keys_.pop_back();
        }
    }
    return keys_.front();
}

TicketKeyRing::Match TicketKeyRing::decrypting(const unsigned char* name, TicketKey& out) const {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < keys_.size(); ++i) {
        if (std::memcmp(keys_[i].name.data(), name, keys_[i].name.size()) == 0) {
            out = keys_[i];
            return i == 0 ? Match::Current : Match::Previous;
        }
    }
    return Match::None;
}

std::size_t TicketKeyRing::size() const {
    std::lock_guard lock(mutex_);
    return keys_.size();
}

void SessionCache::set_capacity(std::size_t capacity) {
    std::lock_guard lock(mutex_);
    capacity_ = capacity;
    evict_locked();
}

void SessionCache::put(std::string id, std::string der, std::int64_t expires_s) {
    std::lock_guard lock(mutex_);
    if (capacity_ == 0) return;
    const std::uint64_t sequence = next_sequence_++;
    entries_[id] = Entry{std::move(der), expires_s, sequence};
    order_.emplace_back(sequence, std::move(id));
    evict_locked();
}

void SessionCache::evict_locked() {
    // order_ may name entries that were removed or replaced since: those are
    // skipped by their sequence number.
    while (entries_.size() > capacity_ && !order_.empty()) {
        auto it = entries_.find(order_.front().second);
        if (it != entries_.end() && it->second.sequence == order_.front().first) entries_.erase(it);
        order_.pop_front();
    }
    // Keep the order queue from growing with stale names when the same ids
    // are replaced over and over.
    while (!order_.empty() && order_.size() > 2 * entries_.size() + 16) {
        auto it = entries_.find(order_.front().second);
        if (it != entries_.end() && it->second.sequence == order_.front().first) break;
        order_.pop_front();
    }
}

std::optional<std::string> SessionCache::get(std::string_view id, std::int64_t now_s) {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(std::string(id));
    if (it == entries_.end()) return std::nullopt;
    if (it->second.expires_s <= now_s) {
        entries_.erase(it);
        return std::nullopt;
    }
    return it->second.der;
}

void SessionCache::remove(std::string_view id) {
    std::lock_guard lock(mutex_);
    entries_.erase(std::string(id));
}

std::size_t SessionCache::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

SessionStore::SessionStore(std::int64_t now_s)
    : rotating_(std::make_shared<TicketKeyRing>(kRotateEvery, 1, now_s)) {}

std::shared_ptr<TicketKeyRing> SessionStore::file_ring(const std::string& listener, const TicketKey& key) {
    std::lock_guard lock(mutex_);
    std::shared_ptr<TicketKeyRing>& ring = files_[listener];
    if (ring) {
        ring->adopt(key);
    } else {
        ring = std::make_shared<TicketKeyRing>(key);
    }
    return ring;
}

std::shared_ptr<SessionCache> SessionStore::cache(const std::string& listener, std::size_t capacity) {
    std::lock_guard lock(mutex_);
    std::shared_ptr<SessionCache>& cache = caches_[listener];
    if (cache) {
        cache->set_capacity(capacity);
    } else {
        cache = std::make_shared<SessionCache>(capacity);
    }
    return cache;
}

}  // namespace tls
