// Where a route's JWK Set comes from (a file or an HTTPS URL) and the set
// in force now. The set is an immutable snapshot published by the main
// thread (jwks_file watcher, jwks_url fetcher: runtime/jwks_fetcher) and
// read by every worker at each handshake: an atomic shared_ptr swap, like
// configuration generations, so a worker never sees half a set and an old
// set lives until its last reader lets go.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "auth/jwks.h"
#include "net/tls.h"

namespace jwks {

// What identifies the content of a file without reading it: a rename
// (atomic replace) changes the inode, an in-place write the mtime or size.
struct FileStamp {
    dev_t device = 0;
    ino_t inode = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t size = 0;
    bool operator==(const FileStamp&) const = default;
};

// The stamp of <path> now, or nullopt when it cannot be stat'ed.
std::optional<FileStamp> stamp_of(const std::string& path);

struct LoadedFile {
    KeySet set;
    FileStamp stamp;
};

// Reads and parses the JWK Set file <path>: the set and the stamp of what
// was read, or a sentence ("cannot read PATH: ...", "PATH: not a JWK Set:
// ..."). Files over <limits>.max_bytes are refused unread.
std::variant<LoadedFile, std::string> load_file(const std::string& path, const Limits& limits = {});

class Source {
public:
    struct Origin {
        std::string route;   // the route's label for logs and metrics ("host/prefix")
        std::string file;    // jwks_file, or ""
        std::string url;     // jwks_url as written, or ""
        HttpsUrl https;      // jwks_url split
        std::shared_ptr<const tls::ClientContext> tls;  // jwks_url: verified against tls_ca or the system CAs
        std::int64_t refresh_ms = 5 * 60 * 1000;        // jwks_refresh
    };

    explicit Source(Origin origin) : origin_(std::move(origin)) {}

    const Origin& origin() const { return origin_; }

    // The set in force; nullptr until one was loaded or fetched.
    std::shared_ptr<const KeySet> current() const { return set_.load(std::memory_order_acquire); }
    void publish(std::shared_ptr<const KeySet> set) { set_.store(std::move(set), std::memory_order_release); }

    // A worker saw a token with an unknown kid: the fetcher refetches (at
    // most once per kUnknownKidFloorMs per source).
    void request_refetch() { refetch_wanted_.store(true, std::memory_order_relaxed); }
    bool take_refetch_request() { return refetch_wanted_.exchange(false, std::memory_order_relaxed); }

    // jwks_file: the stamp of the content published (main thread only).
    FileStamp stamp;

    // The fetcher's progress, for a handshake held until the refetch its
    // unknown kid asked for lands (runtime/token_check.h). Written by the
    // fetcher (main thread), read by workers; the orders of the stores and
    // loads make a reader that sees the floor of a fetch also see that
    // fetch in flight or finished.
    struct Progress {
        bool on_demand = false;          // jwks_url: an unknown kid can trigger a fetch (jwks_file: never)
        bool in_flight = false;          // a fetch is under way
        std::int64_t kid_floor_until_ms = INT64_MIN;  // steady clock: unknown kids trigger no fetch before this
        std::uint64_t finished = 0;      // fetches finished so far, published or failed
    };
    Progress progress() const {
        Progress p;
        p.on_demand = !origin_.url.empty();
        p.kid_floor_until_ms = kid_floor_until_ms_.load(std::memory_order_acquire);
        p.in_flight = in_flight_.load(std::memory_order_acquire);
        p.finished = finished_.load(std::memory_order_acquire);
        return p;
    }
    std::uint64_t finished_fetches() const { return finished_.load(std::memory_order_acquire); }
    void fetch_started(std::int64_t kid_floor_until_ms) {
        in_flight_.store(true, std::memory_order_release);
        set_kid_floor(kid_floor_until_ms);
    }
    void set_kid_floor(std::int64_t until_ms) { kid_floor_until_ms_.store(until_ms, std::memory_order_release); }
    // After publish() of the fetched set, or after a failure.
    void fetch_finished() {
        finished_.fetch_add(1, std::memory_order_acq_rel);
        in_flight_.store(false, std::memory_order_release);
    }

private:
    Origin origin_;
    std::atomic<std::shared_ptr<const KeySet>> set_;
    std::atomic<bool> refetch_wanted_{false};
    std::atomic<bool> in_flight_{false};
    std::atomic<std::int64_t> kid_floor_until_ms_{INT64_MIN};
    std::atomic<std::uint64_t> finished_{0};
};

inline constexpr std::int64_t kUnknownKidFloorMs = 30 * 1000;

}  // namespace jwks
