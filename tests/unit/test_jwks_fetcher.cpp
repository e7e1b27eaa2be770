// The jwks_url fetcher's schedule (pure): periodic refreshes and fetches for
// unknown kids, at most once per 30 s.
#include <doctest/doctest.h>

#include "runtime/jwks_fetcher.h"

TEST_CASE("jwks_url fetch schedule: periodic, and unknown kids at most once per 30 s") {
    runtime::FetchSchedule s;
    s.next_periodic_ms = 1000;
    CHECK_FALSE(runtime::fetch_due(s, 999, false));
    CHECK(runtime::fetch_due(s, 1000, false));
    s.next_periodic_ms = 1000000;
    // The first unknown kid fetches at once (the floor counts from kid fetches only).
    CHECK(runtime::fetch_due(s, 5000, true));
    CHECK(s.last_kid_fetch_ms == 5000);
    // Another within 30 s waits, remembered, and fetches when the floor passes.
    CHECK_FALSE(runtime::fetch_due(s, 6000, true));
    CHECK(s.kid_fetch_pending);
    CHECK_FALSE(runtime::fetch_due(s, 34999, false));
    CHECK(runtime::fetch_due(s, 35000, false));
    CHECK_FALSE(s.kid_fetch_pending);
    CHECK_FALSE(runtime::fetch_due(s, 36000, false));
}
