// TLS session resumption state that outlives one configuration generation:
// session-ticket keys (a ring: the current key encrypts, previous keys still
// decrypt) and a server-side session cache by session ID for clients that do
// not take tickets. The Server owns one SessionStore for the life of the
// process and hands it to every generation's listener contexts, so a reload
// or another worker never turns a resumption into a full handshake.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

namespace tls {

// One session-ticket key in nginx's ssl_session_ticket_key layout (80 bytes,
// `openssl rand 80`): 16 bytes key name, 32 bytes HMAC-SHA256 secret,
// 32 bytes AES-256-CBC key, in that order. Tickets are encrypted the way
// nginx encrypts them, so both can share a key file.
struct TicketKey {
    static constexpr std::size_t kFileSize = 80;
    std::array<unsigned char, 16> name{};
    std::array<unsigned char, 32> hmac{};
    std::array<unsigned char, 32> aes{};
    bool operator==(const TicketKey&) const = default;
};

// <bytes> (a key file's contents) as a key, or why not: "must be exactly 80
// bytes (made with `openssl rand 80`), got 79".
std::variant<TicketKey, std::string> parse_ticket_key(std::string_view bytes);

// The key in file <path>, or the reason it cannot be used (missing,
// unreadable, wrong size), naming the file.
std::variant<TicketKey, std::string> read_ticket_key_file(const std::string& path);

// A fresh random key (RAND_bytes).
TicketKey random_ticket_key();

// Ticket keys shared by every worker thread (one mutex; it is taken once per
// full handshake to encrypt and once per ticket offered to decrypt).
class TicketKeyRing {
public:
    // Rotating ring: a fresh random key encrypts from <now_s> on and is
    // replaced every <rotate_every>; replaced keys keep decrypting for
    // <keep_previous> more rotations.
    TicketKeyRing(std::chrono::seconds rotate_every, std::size_t keep_previous, std::int64_t now_s);
    // Fixed ring: <key> encrypts until adopt() brings the next one.
    explicit TicketKeyRing(const TicketKey& key);

    // Makes <key> the encrypting key (the operator's file changed); the one
    // it replaces still decrypts. Adopting the current key again is a no-op.
    void adopt(const TicketKey& key);

    // Keeps replaced keys long enough that a ticket issued just before a
    // rotation still decrypts <lifetime> later (a rotating ring only).
    void cover(std::chrono::seconds lifetime);

    // The key to encrypt a new ticket at <now_s>, rotating first when due.
    TicketKey encrypting(std::int64_t now_s);

    enum class Match { None, Current, Previous };
    // The key named <name> into <out>: Current, Previous (the ticket should
    // be renewed under the current key), or None (a full handshake).
    Match decrypting(const unsigned char* name, TicketKey& out) const;

    std::size_t size() const;

private:
    mutable std::mutex mutex_;
    std::deque<TicketKey> keys_;  // front() encrypts
    std::chrono::seconds rotate_every_{0};  // 0 = fixed ring
    std::size_t keep_previous_ = 0;
    std::int64_t rotated_at_s_ = 0;
};

// Sessions by ID for TLS 1.2 clients without tickets (and TLS 1.3 clients
// when tickets are stateful). Holds serialized sessions (i2d_SSL_SESSION) so
// they outlive the SSL_CTX that made them. Bounded: past <capacity> the
// oldest entry goes, which with one timeout per listener is also the one
// that expires first.
class SessionCache {
public:
    explicit SessionCache(std::size_t capacity) : capacity_(capacity) {}

    void set_capacity(std::size_t capacity);
    void put(std::string id, std::string der, std::int64_t expires_s);
    // The session stored under <id> that has not expired at <now_s>.
    std::optional<std::string> get(std::string_view id, std::int64_t now_s);
    void remove(std::string_view id);
    std::size_t size() const;

private:
    struct Entry {
        std::string der;
        std::int64_t expires_s = 0;
        std::uint64_t sequence = 0;
    };
    void evict_locked();

    mutable std::mutex mutex_;
    std::size_t capacity_;
    std::uint64_t next_sequence_ = 0;
    std::unordered_map<std::string, Entry> entries_;
    std::deque<std::pair<std::uint64_t, std::string>> order_;  // insertion order: (sequence, id)
};

// What the Server keeps across reloads: one rotating ring for listeners
// without ticket_key_file, one ring per listener address with
// ticket_key_file (the previous key still decrypts after the file or its
// path changed), one session cache per listener address.
class SessionStore {
public:
    // Rotation of the generated keys; a key lives at most
    // kRotateEvery * (keep + 1) where keep covers the longest session_timeout.
    static constexpr std::chrono::seconds kRotateEvery{3600};

    explicit SessionStore(std::int64_t now_s);

    std::shared_ptr<TicketKeyRing> rotating_ring() const { return rotating_; }
    // The ring of the listener at <listener> whose current key is now <key>.
    std::shared_ptr<TicketKeyRing> file_ring(const std::string& listener, const TicketKey& key);
    // The cache of the listener at <listener> (its address), sized <capacity>.
    std::shared_ptr<SessionCache> cache(const std::string& listener, std::size_t capacity);

private:
    std::mutex mutex_;
    std::shared_ptr<TicketKeyRing> rotating_;
    std::map<std::string, std::shared_ptr<TicketKeyRing>> files_;
    std::map<std::string, std::shared_ptr<SessionCache>> caches_;
};

}  // namespace tls
