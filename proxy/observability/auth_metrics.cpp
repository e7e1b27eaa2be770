#include "observability/auth_metrics.h"

#include <fmt/format.h>

#include "observability/metrics.h"

namespace obs {

void AuthMetrics::auth_failure(const std::string& route, std::string_view reason) {
    std::lock_guard lock(mutex_);
    ++failures_[{route, std::string(reason)}];
}

void AuthMetrics::jwks_fetch(const std::string& route, bool ok) {
    std::lock_guard lock(mutex_);
    ++fetches_[{route, ok ? "ok" : "error"}];
}

void AuthMetrics::jwks_keys(const std::string& route, std::uint64_t count) {
    std::lock_guard lock(mutex_);
    keys_[route] = count;
}

std::uint64_t AuthMetrics::failures(const std::string& route, std::string_view reason) const {
    std::lock_guard lock(mutex_);
    auto it = failures_.find({route, std::string(reason)});
    return it == failures_.end() ? 0 : it->second;
}

std::uint64_t AuthMetrics::fetches(const std::string& route, bool ok) const {
    std::lock_guard lock(mutex_);
    auto it = fetches_.find({route, ok ? "ok" : "error"});
    return it == fetches_.end() ? 0 : it->second;
}

std::string AuthMetrics::render() const {
    std::string out;
    std::lock_guard lock(mutex_);
    out += "# HELP wsgate_auth_failures_total Handshakes refused for their token, by route and reason.\n"
           "# TYPE wsgate_auth_failures_total counter\n";
    for (const auto& [key, n] : failures_)
        out += fmt::format("wsgate_auth_failures_total{{route=\"{}\",reason=\"{}\"}} {}\n", escape_label(key.first),
                           escape_label(key.second), n);
    out += "# HELP wsgate_jwks_fetches_total JWK Set fetches and file reads, by route and result.\n"
           "# TYPE wsgate_jwks_fetches_total counter\n";
    for (const auto& [key, n] : fetches_)
        out += fmt::format("wsgate_jwks_fetches_total{{route=\"{}\",result=\"{}\"}} {}\n", escape_label(key.first),
                           escape_label(key.second), n);
    out += "# HELP wsgate_jwks_keys Signature keys in the JWK Set in force, by route.\n"
           "# TYPE wsgate_jwks_keys gauge\n";
    for (const auto& [route, n] : keys_)
        out += fmt::format("wsgate_jwks_keys{{route=\"{}\"}} {}\n", escape_label(route), n);
    out += "# HELP wsgate_subject_limit_refusals_total Handshakes refused with 429 by max_sessions_per_subject.\n"
           "# TYPE wsgate_subject_limit_refusals_total counter\n";
    out += fmt::format("wsgate_subject_limit_refusals_total {}\n", subject_refusals_.load(std::memory_order_relaxed));
    return out;
}

}  // namespace obs
