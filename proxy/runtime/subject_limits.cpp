#include "runtime/subject_limits.h"

namespace runtime {

std::string SubjectLimits::key(std::string_view route, std::string_view subject) {
    // A NUL cannot occur in a route label or in a subject that passed
    // Claims::header_value, so the pair is unambiguous.
    std::string k;
    k.reserve(route.size() + 1 + subject.size());
    k.append(route);
    k.push_back('\0');
    k.append(subject);
    return k;
}

bool SubjectLimits::acquire(const std::string& key, std::uint64_t limit) {
    std::lock_guard lock(mutex_);
    auto [it, inserted] = open_.try_emplace(key, 0);
    if (it->second >= limit) {
        if (it->second == 0) open_.erase(it);
        return false;
    }
    ++it->second;
    return true;
}

void SubjectLimits::release(const std::string& key) {
    std::lock_guard lock(mutex_);
    auto it = open_.find(key);
    if (it != open_.end() && --it->second == 0) open_.erase(it);
}

std::uint64_t SubjectLimits::open(const std::string& key) const {
    std::lock_guard lock(mutex_);
    auto it = open_.find(key);
    return it == open_.end() ? 0 : it->second;
}

}  // namespace runtime
