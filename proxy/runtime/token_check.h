// The runtime side of a route's token check: which verifier call a route
// needs (key file, or the JWK Set in force now), the refetch an unknown kid
// asks for, and the session deadline close_on_expiry derives from "exp".
#pragma once

#include <cstdint>
#include <string>

#include "auth/jwt.h"
#include "config/config.h"

namespace runtime {

// Verifies <token> for route <auth> at <now_seconds> (Unix time). A JWK Set
// route is checked against the set published now; a token naming a kid
// that set lacks asks the fetcher for a refetch (rate-limited there).
jwt::Result verify_route_token(const config::RouteAuth& auth, const std::string& token, std::int64_t now_seconds);

// close_on_expiry: the worker-clock time (ms) at which a session whose
// token carries <claims> must close, given the worker clock <now_ms> and
// the wall clock <wall_now_ms> (ms since the epoch); INT64_MAX when the
// token has no "exp".
std::int64_t expiry_deadline_ms(const jwt::Claims& claims, std::int64_t now_ms, std::int64_t wall_now_ms);

}  // namespace runtime
