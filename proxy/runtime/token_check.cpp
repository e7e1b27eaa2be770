#include "runtime/token_check.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace runtime {

jwt::Result verify_route_token(const config::RouteAuth& auth, const std::string& token, std::int64_t now_seconds) {
    if (!auth.keys) return auth.verifier->verify(token, now_seconds);
    // One snapshot for the whole check: a swap during it cannot mix sets.
    const std::shared_ptr<const jwks::KeySet> set = auth.keys->current();
    jwt::Result result = auth.verifier->verify(token, now_seconds, set.get());
    if (result.unknown_key_id) auth.keys->request_refetch();
    return result;
}

bool keys_worth_awaiting(const jwks::Source::Progress& progress, std::uint64_t finished_before, std::int64_t now_ms) {
    if (!progress.on_demand) return false;
    return progress.in_flight || progress.finished != finished_before || now_ms >= progress.kid_floor_until_ms;
}

std::int64_t fetch_clock_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

std::int64_t keys_wait_bound_ms(std::int64_t handshake_timeout_ms) {
    return std::clamp<std::int64_t>(handshake_timeout_ms, 0, kKeysWaitMaxMs);
}

std::int64_t expiry_deadline_ms(const jwt::Claims& claims, std::int64_t now_ms, std::int64_t wall_now_ms) {
    const auto exp = claims.expires_at();
    if (!exp) return INT64_MAX;
    const double left_ms = *exp * 1000.0 - static_cast<double>(wall_now_ms);
    if (!(left_ms > 0)) return now_ms;
    if (left_ms > 1e15) return INT64_MAX;  // far beyond any session
    return now_ms + static_cast<std::int64_t>(std::ceil(left_ms));
}

}  // namespace runtime
