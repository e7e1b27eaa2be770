// runtime/token_check: the close_on_expiry deadline, and the wait of a
// handshake whose token names a kid the route's JWK Set lacks, held until
// the refetch it asked for lands (issue 19): the pure decision
// (keys_worth_awaiting), the bound on the wait, and the progress a
// jwks::Source reports as the fetcher starts and finishes fetches.
#include <doctest/doctest.h>

#include <cstdint>

#include "auth/key_source.h"
#include "jwt_support.h"
#include "runtime/token_check.h"

namespace {

jwks::Source url_source() {
    jwks::Source::Origin origin;
    origin.route = "/chat";
    origin.url = "https://idp.test/certs";
    return jwks::Source(origin);
}

jwks::Source file_source() {
    jwks::Source::Origin origin;
    origin.route = "/chat";
    origin.file = "/etc/wsgate/jwks.json";
    return jwks::Source(origin);
}

}  // namespace

TEST_CASE("keys_worth_awaiting: a jwks_url route waits when a fetch is due, in flight or just finished") {
    jwks::Source::Progress p;
    p.on_demand = true;
    p.kid_floor_until_ms = 40000;
    p.finished = 3;
    // Within the 30 s floor, nothing in flight, nothing new: no fetch will come.
    CHECK_FALSE(runtime::keys_worth_awaiting(p, 3, 39999));
    // The floor has passed: the kid's refetch request starts one.
    CHECK(runtime::keys_worth_awaiting(p, 3, 40000));
    CHECK(runtime::keys_worth_awaiting(p, 3, 90000));
    // Within the floor, a fetch in flight (periodic, or another kid's) will answer.
    p.in_flight = true;
    CHECK(runtime::keys_worth_awaiting(p, 3, 39999));
    // It finished between the check of the token and now: its set is the answer.
    p.in_flight = false;
    p.finished = 4;
    CHECK(runtime::keys_worth_awaiting(p, 3, 39999));
    // A fresh source: the floor is open.
    CHECK(runtime::keys_worth_awaiting(jwks::Source::Progress{true, false, INT64_MIN, 0}, 0, 0));
    CHECK(runtime::keys_worth_awaiting(jwks::Source::Progress{true, false, INT64_MIN, 0}, 0, INT64_MIN / 2));
}

TEST_CASE("keys_worth_awaiting: a jwks_file route never waits (it is not refetched on demand)") {
    jwks::Source::Progress p;
    p.on_demand = false;
    CHECK_FALSE(runtime::keys_worth_awaiting(p, 0, 0));
    p.in_flight = true;
    p.finished = 9;
    CHECK_FALSE(runtime::keys_worth_awaiting(p, 0, 1000000));
}

TEST_CASE("the wait for keys is bounded by min(handshake timeout, 2 s)") {
    CHECK(runtime::keys_wait_bound_ms(10000) == 2000);
    CHECK(runtime::keys_wait_bound_ms(2000) == 2000);
    CHECK(runtime::keys_wait_bound_ms(1500) == 1500);
    CHECK(runtime::keys_wait_bound_ms(1) == 1);
    CHECK(runtime::keys_wait_bound_ms(0) == 0);
    CHECK(runtime::keys_wait_bound_ms(-5) == 0);
    CHECK(runtime::kKeysPollMs >= 20);
    CHECK(runtime::kKeysPollMs <= 50);
}

TEST_CASE("Source progress follows the fetcher: started, finished, floor") {
    jwks::Source url = url_source();
    jwks::Source::Progress p = url.progress();
    CHECK(p.on_demand);
    CHECK_FALSE(p.in_flight);
    CHECK(p.finished == 0);
    CHECK(p.kid_floor_until_ms == INT64_MIN);
    const std::uint64_t before = url.finished_fetches();
    CHECK(runtime::keys_worth_awaiting(p, before, runtime::fetch_clock_ms()));

    // A kid fetch starts at t = 5000: the floor closes until 35000.
    url.fetch_started(5000 + jwks::kUnknownKidFloorMs);
    p = url.progress();
    CHECK(p.in_flight);
    CHECK(p.kid_floor_until_ms == 35000);
    CHECK(runtime::keys_worth_awaiting(p, before, 6000));  // in flight: its answer is coming

    // It finishes (published or failed): a handshake that read <before> has its answer.
    url.fetch_finished();
    p = url.progress();
    CHECK_FALSE(p.in_flight);
    CHECK(p.finished == before + 1);
    CHECK(url.finished_fetches() == before + 1);
    CHECK(runtime::keys_worth_awaiting(p, before, 6000));
    // A handshake that checked its token after that fetch, within the floor: no wait.
    CHECK_FALSE(runtime::keys_worth_awaiting(p, p.finished, 6000));
    CHECK(runtime::keys_worth_awaiting(p, p.finished, 35000));

    // A reload carries the floor over to the new route's source.
    jwks::Source next = url_source();
    next.set_kid_floor(35000);
    CHECK_FALSE(runtime::keys_worth_awaiting(next.progress(), 0, 6000));

    jwks::Source file = file_source();
    CHECK_FALSE(file.progress().on_demand);
    CHECK_FALSE(runtime::keys_worth_awaiting(file.progress(), 0, runtime::fetch_clock_ms()));
}

TEST_CASE("fetch_clock_ms is monotonic") {
    const std::int64_t a = runtime::fetch_clock_ms();
    const std::int64_t b = runtime::fetch_clock_ms();
    CHECK(b >= a);
}

TEST_CASE("close_on_expiry deadline from exp") {
    auto claims_with = [](const std::string& payload) {
        jwt::Options o;
        o.algorithm = jwt::Algorithm::HS256;
        o.key = jwt_test::hs_secret;
        auto v = std::get<jwt::Verifier>(jwt::Verifier::create(o));
        auto r = v.verify(jwt_test::sign(jwt::Algorithm::HS256, payload), 1700000000);
        REQUIRE(r.ok);
        return r.claims;
    };
    // exp 2.5 s after the wall clock: the worker-clock deadline is 2500 ms ahead.
    CHECK(runtime::expiry_deadline_ms(claims_with("{\"exp\":1700000002.5}"), 1000, 1700000000000) == 3500);
    CHECK(runtime::expiry_deadline_ms(claims_with("{\"exp\":1700000010}"), 0, 1700000000000) == 10000);
    CHECK(runtime::expiry_deadline_ms(claims_with("{}"), 1000, 1700000000000) == INT64_MAX);
    CHECK(runtime::expiry_deadline_ms(claims_with("{\"exp\":1e300}"), 1000, 1700000000000) == INT64_MAX);
    // Already past (leeway let it in): close at once.
    CHECK(runtime::expiry_deadline_ms(claims_with("{\"exp\":1700000001}"), 1000, 1700000002000) == 1000);
}
