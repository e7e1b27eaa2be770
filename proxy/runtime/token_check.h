// The runtime side of a route's token check: which verifier call a route
// needs (key file, or the JWK Set in force now), the refetch an unknown kid
// asks for and whether its handshake waits for it, and the session deadline
// close_on_expiry derives from "exp".
#pragma once

#include <cstdint>
#include <string>

#include "auth/jwt.h"
#include "auth/key_source.h"
#include "config/config.h"

namespace runtime {

// Verifies <token> for route <auth> at <now_seconds> (Unix time). A JWK Set
// route is checked against the set published now; a token naming a kid
// that set lacks asks the fetcher for a refetch (rate-limited there).
jwt::Result verify_route_token(const config::RouteAuth& auth, const std::string& token, std::int64_t now_seconds);

// A JWK Set route's token named a kid the set lacks: whether the handshake
// is held until the refetch that kid asked for lands, then checked again
// (pure). Yes when a fetch is in flight, when one finished since the
// handshake read <finished_before> (the set it checked may already be
// stale), or when the 30 s floor lets the request start one now (<now_ms>,
// steady clock). No for jwks_file (never refetched on demand), and when the
// floor holds the refetch back: no fetch will come in time.
bool keys_worth_awaiting(const jwks::Source::Progress& progress, std::uint64_t finished_before, std::int64_t now_ms);

// Now on the clock of Progress::kid_floor_until_ms (the fetcher's:
// std::chrono::steady_clock, in ms).
std::int64_t fetch_clock_ms();

// How long a handshake is held for keys at most, given timeouts.handshake:
// min(handshake, kKeysWaitMaxMs). Then the token gets its 401.
inline constexpr std::int64_t kKeysWaitMaxMs = 2000;
std::int64_t keys_wait_bound_ms(std::int64_t handshake_timeout_ms);
// How often a held handshake looks at the source's progress.
inline constexpr std::int64_t kKeysPollMs = 25;

// close_on_expiry: the worker-clock time (ms) at which a session whose
// token carries <claims> must close, given the worker clock <now_ms> and
// the wall clock <wall_now_ms> (ms since the epoch); INT64_MAX when the
// token has no "exp".
std::int64_t expiry_deadline_ms(const jwt::Claims& claims, std::int64_t now_ms, std::int64_t wall_now_ms);

}  // namespace runtime
