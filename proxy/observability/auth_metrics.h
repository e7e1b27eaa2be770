// Metrics of token authentication and JWK Sets, process-wide: written by the
// workers (refused tokens, subject-limit refusals) and the main thread (JWK
// Set fetches), at handshakes and fetches only, never per frame, so a mutex
// is cheap enough. Rendered after the per-worker metrics on /metrics.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

namespace obs {

class AuthMetrics {
public:
    // wsgate_auth_failures_total{route,reason}: <reason> is one of
    // jwt::reason or "missing token" (a short fixed set).
    void auth_failure(const std::string& route, std::string_view reason);
    // wsgate_jwks_fetches_total{route,result}: result "ok" or "error";
    // a jwks_file re-read counts as a fetch too.
    void jwks_fetch(const std::string& route, bool ok);
    // wsgate_jwks_keys{route}: keys in the set in force.
    void jwks_keys(const std::string& route, std::uint64_t count);
    // wsgate_subject_limit_refusals_total
    void subject_limit_refusal() { subject_refusals_.fetch_add(1, std::memory_order_relaxed); }

    std::uint64_t failures(const std::string& route, std::string_view reason) const;
    std::uint64_t fetches(const std::string& route, bool ok) const;

    // The Prometheus text (0.0.4) of all four families, HELP and TYPE
    // included even when empty.
    std::string render() const;

private:
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, std::string>, std::uint64_t> failures_;
    std::map<std::pair<std::string, std::string>, std::uint64_t> fetches_;
    std::map<std::string, std::uint64_t> keys_;
    std::atomic<std::uint64_t> subject_refusals_{0};
};

}  // namespace obs
