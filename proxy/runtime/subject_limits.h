// max_sessions_per_subject: open sessions per verified token subject,
// counted across all workers. Touched only at a handshake that passed its
// token check and when such a session ends, so one mutex-protected map is
// enough (the per-IP connection count works the same way).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace runtime {

class SubjectLimits {
public:
    // The counting key of <subject> on route <route>: the limit is a
    // route's, so the same user on two routes is counted on each.
    static std::string key(std::string_view route, std::string_view subject);

    // Counts one session of <key> in, or false when <key> already has
    // <limit> open sessions (nothing counted then).
    bool acquire(const std::string& key, std::uint64_t limit);
    // Counts one session of <key> out (one that acquire() admitted).
    void release(const std::string& key);
    std::uint64_t open(const std::string& key) const;

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::uint64_t> open_;
};

}  // namespace runtime
