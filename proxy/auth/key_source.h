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

private:
    Origin origin_;
    std::atomic<std::shared_ptr<const KeySet>> set_;
    std::atomic<bool> refetch_wanted_{false};
};

inline constexpr std::int64_t kUnknownKidFloorMs = 30 * 1000;

}  // namespace jwks
