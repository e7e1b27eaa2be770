#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include "runtime/admin_route.h"

using admin_route::Endpoint;
using admin_route::route;
using namespace std::chrono_literals;

TEST_CASE("admin routes: read endpoints take GET and HEAD, refuse other methods with Allow") {
    const std::vector<std::pair<std::string, Endpoint>> reads = {
        {"/", Endpoint::Dashboard}, {"/metrics", Endpoint::Metrics},
        {"/healthz", Endpoint::Healthz}, {"/status", Endpoint::Status}};
    for (const auto& [path, endpoint] : reads) {
        for (const char* method : {"GET", "HEAD"}) {
            auto r = route(method, path, "");
            CHECK(r.status == 200);
            CHECK(r.endpoint == endpoint);
            CHECK_FALSE(r.write());
        }
        for (const char* method : {"POST", "PUT", "DELETE", "get"}) {
            auto r = route(method, path, "");
            CHECK(r.status == 405);
            CHECK(std::string(r.allow) == "GET, HEAD");
        }
    }
    auto asset = route("GET", "/dashboard/app.js", "");
    CHECK(asset.status == 200);
    CHECK(asset.endpoint == Endpoint::Asset);
    CHECK(asset.asset == "app.js");
    CHECK(route("POST", "/dashboard/app.js", "").status == 405);
    for (const char* path : {"/nope", "/dashboard", "/dashboard/", "/dashboard/a/b", "/metrics/", "", "metrics",
                             "/pools", "/pools/main/backends/b1", "/pools/main/backends/b1/stop",
                             "/pools/main/members/b1/drain", "/pools/main/backends/b1/drain/now"}) {
        auto r = route("GET", path, "");
        CHECK_MESSAGE(r.status == 404, path);
        CHECK(r.error == "not found");
    }
}

TEST_CASE("admin routes: drain and enable take POST, decode their names and ?within=") {
    auto drain = route("POST", "/pools/main/backends/b1/drain", "");
    CHECK(drain.status == 200);
    CHECK(drain.endpoint == Endpoint::Drain);
    CHECK(drain.write());
    CHECK(drain.pool == "main");
    CHECK(drain.backend == "b1");
    CHECK_FALSE(drain.within.has_value());

    auto within = route("POST", "/pools/main/backends/127.0.0.1%3A9001/drain", "within=30s");
    CHECK(within.status == 200);
    CHECK(within.backend == "127.0.0.1:9001");
    REQUIRE(within.within.has_value());
    CHECK(*within.within == 30s);
    CHECK(*route("POST", "/pools/p/backends/b/drain", "within=250ms").within == 250ms);
    CHECK(*route("POST", "/pools/p/backends/b/drain", "within=0s").within == 0ms);
    CHECK(route("POST", "/pools/p/backends/b/drain", "&within=1m&").within == 1min);

    auto enable = route("POST", "/pools/a%20b/backends/x/enable", "");
    CHECK(enable.status == 200);
    CHECK(enable.endpoint == Endpoint::Enable);
    CHECK(enable.pool == "a b");

    for (const char* method : {"GET", "HEAD", "PUT", "DELETE", "PATCH"}) {
        for (const char* path : {"/pools/main/backends/b1/drain", "/pools/nope/backends/nope/enable"}) {
            auto r = route(method, path, "");
            CHECK(r.status == 405);
            CHECK(std::string(r.allow) == "POST");
        }
    }
}

TEST_CASE("admin routes: bad parameters and escapes are 400 with a reason") {
    auto bad = route("POST", "/pools/p/backends/b/drain", "within=soon");
    CHECK(bad.status == 400);
    CHECK(bad.error == "within: expected a duration such as \"30s\" or \"500ms\", got \"soon\"");
    CHECK(route("POST", "/pools/p/backends/b/drain", "within=").status == 400);
    CHECK(route("POST", "/pools/p/backends/b/drain", "within=-1s").status == 400);
    CHECK(route("POST", "/pools/p/backends/b/drain", "within").status == 400);
    auto unknown = route("POST", "/pools/p/backends/b/drain", "within=1s&force=1");
    CHECK(unknown.status == 400);
    CHECK(unknown.error == "unknown parameter \"force\"");
    CHECK(route("POST", "/pools/p/backends/b/enable", "within=1s").error == "unknown parameter \"within\"");
    for (const char* path : {"/pools/%zz/backends/b/drain", "/pools/p/backends/%2/drain", "/pools/p/backends/a%/drain",
                             "/pools/p/backends/a%2Fb/drain", "/pools/p/backends/a%00/drain",
                             "/pools//backends/b/drain", "/pools/p/backends//drain"}) {
        auto r = route("POST", path, "");
        CHECK_MESSAGE(r.status == 400, path);
        CHECK(r.error == "malformed pool or back-end name in the path");
    }
}

TEST_CASE("percent_decode: every escape, upper and lower case; no control byte") {
    std::string out;
    for (int byte = 0x20; byte < 256; ++byte) {
        if (byte == '/' || byte == 0x7f) continue;
        for (const char* format : {"%%%02X", "%%%02x"}) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, format, byte);
            REQUIRE(admin_route::percent_decode(escaped, out));
            CHECK(out == std::string(1, static_cast<char>(byte)));
        }
    }
    CHECK(admin_route::percent_decode("plain-name_1.2", out));
    CHECK(out == "plain-name_1.2");
    CHECK_FALSE(admin_route::percent_decode("%2F", out));
    for (int byte = 0; byte < 0x20; ++byte) {
        char escaped[8];
        std::snprintf(escaped, sizeof escaped, "%%%02X", byte);
        CHECK_FALSE(admin_route::percent_decode(escaped, out));
        CHECK_FALSE(admin_route::percent_decode(std::string("a") + static_cast<char>(byte), out));
    }
    CHECK_FALSE(admin_route::percent_decode("%7F", out));
    CHECK_FALSE(admin_route::percent_decode("\x7f", out));
    CHECK_FALSE(admin_route::percent_decode("%g0", out));
    CHECK_FALSE(admin_route::percent_decode("ab%4", out));
}

TEST_CASE("bearer_matches: the exact token, any scheme case, nothing else") {
    using admin_route::bearer_matches;
    CHECK(bearer_matches("Bearer SECRET", "SECRET"));
    CHECK(bearer_matches("bearer SECRET", "SECRET"));
    CHECK(bearer_matches("BEARER   SECRET ", "SECRET"));
    CHECK_FALSE(bearer_matches("Bearer secret", "SECRET"));
    CHECK_FALSE(bearer_matches("Bearer SECRE", "SECRET"));
    CHECK_FALSE(bearer_matches("Bearer SECRETS", "SECRET"));
    CHECK_FALSE(bearer_matches("Bearer ", "SECRET"));
    CHECK_FALSE(bearer_matches("Basic U0VDUkVU", "SECRET"));
    CHECK_FALSE(bearer_matches("SECRET", "SECRET"));
    CHECK_FALSE(bearer_matches("BearerSECRET", "SECRET"));
    CHECK_FALSE(bearer_matches("", "SECRET"));
    // No token configured never matches (the server does not ask then).
    CHECK_FALSE(bearer_matches("Bearer ", ""));
}

TEST_CASE("backend_state: up, down, draining, drained") {
    using admin_route::backend_state;
    CHECK(std::string(backend_state(true, false, 3)) == "up");
    CHECK(std::string(backend_state(false, false, 0)) == "down");
    CHECK(std::string(backend_state(true, true, 2)) == "draining");
    CHECK(std::string(backend_state(false, true, 1)) == "draining");
    CHECK(std::string(backend_state(true, true, 0)) == "drained");
    CHECK(std::string(backend_state(false, true, 0)) == "drained");
}

TEST_CASE("drain_offset_ms: the middle of n equal slots of the window") {
    using admin_route::drain_offset_ms;
    CHECK(drain_offset_ms(0, 1, 30000) == 15000);
    CHECK(drain_offset_ms(0, 4, 4000) == 500);
    CHECK(drain_offset_ms(1, 4, 4000) == 1500);
    CHECK(drain_offset_ms(3, 4, 4000) == 3500);
    CHECK(drain_offset_ms(0, 3, 0) == 0);
    CHECK(drain_offset_ms(2, 3, -5) == 0);
    CHECK(drain_offset_ms(5, 3, 1000) == 0);  // out of range: now
    // Evenly spread: strictly increasing, inside the window, equal gaps (±1 ms).
    const std::size_t n = 1000;
    const std::int64_t window = 30000;
    std::int64_t previous = -1;
    for (std::size_t i = 0; i < n; ++i) {
        const std::int64_t at = drain_offset_ms(i, n, window);
        CHECK(at > previous);
        CHECK(at < window);
        if (i > 0) CHECK(std::abs((at - previous) - window / static_cast<std::int64_t>(n)) <= 1);
        previous = at;
    }
    // No overflow with a huge window and count.
    const std::int64_t huge = std::int64_t{1} << 60;
    CHECK(drain_offset_ms((1u << 20) - 1, 1u << 20, huge) < huge);
    CHECK(drain_offset_ms((1u << 20) - 1, 1u << 20, huge) > huge - huge / (1 << 19));
}
