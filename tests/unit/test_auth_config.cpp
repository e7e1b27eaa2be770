// [route.auth] with JWK Sets (issue 19): jwks_file, jwks_url, jwks_refresh,
// algorithms, tls_ca, close_on_expiry, max_sessions_per_subject; the
// conflict with key_file; exact error texts. Also the runtime pieces that
// sit behind them and are pure: jwks_file loading and stamps, the fetch
// schedule, the subject counts, the expiry deadline, the auth metrics.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "auth/key_source.h"
#include "config/config.h"
#include "jwt_support.h"
#include "observability/auth_metrics.h"
#include "runtime/jwks_fetcher.h"
#include "runtime/subject_limits.h"
#include "runtime/token_check.h"

namespace {

using config::Error;
using config::LoadResult;

constexpr std::string_view kBase = R"([[listener]]
listen = "127.0.0.1:8080"
[[pool]]
name = "main"
[[pool.backend]]
address = "127.0.0.1:9001"
[[route]]
pool = "main"
path_prefix = "/chat"
[route.auth]
)";  // what is appended starts at line 11

std::vector<std::string> errors_of(const std::string& more) {
    const LoadResult result = config::load_string(std::string(kBase) + more, "t.toml");
    std::vector<std::string> out;
    if (const auto* errors = std::get_if<std::vector<Error>>(&result)) {
        for (const Error& e : *errors) out.push_back(e.to_string());
    }
    return out;
}

std::string error_of(const std::string& more) {
    auto errors = errors_of(more);
    for (const auto& e : errors) MESSAGE(e);
    REQUIRE(errors.size() == 1);
    return errors[0];
}

std::shared_ptr<const config::Config> load_ok(const std::string& more) {
    const LoadResult result = config::load_string(std::string(kBase) + more, "t.toml");
    if (const auto* errors = std::get_if<std::vector<Error>>(&result)) {
        for (const Error& e : *errors) MESSAGE(e.to_string());
        FAIL("unexpected errors");
    }
    return std::get<std::shared_ptr<const config::Config>>(result);
}

struct TempFile {
    std::string path;
    explicit TempFile(const std::string& text) {
        char name[] = "/tmp/wsgate-jwks-XXXXXX";
        const int fd = mkstemp(name);
        REQUIRE(fd >= 0);
        close(fd);
        path = name;
        write(text);
    }
    void write(const std::string& text) const {
        std::ofstream out(path, std::ios::trunc);
        out << text;
    }
    ~TempFile() { std::remove(path.c_str()); }
};

std::string jwks_of(EVP_PKEY* key, const std::string& kid) {
    return "{\"keys\":[{" + jwt_test::jwk_members(key) + ",\"kid\":\"" + kid + "\"}]}";
}

}  // namespace

TEST_CASE("[route.auth] jwks_file: read at load, published, with defaults") {
    TempFile file(jwks_of(jwt_test::rsa_2048().get(), "k1"));
    auto cfg = load_ok("jwks_file = \"" + file.path + "\"\nissuer = \"https://idp\"\n");
    const auto& auth = *cfg->routes[0].auth;
    REQUIRE(auth.keys != nullptr);
    CHECK(auth.label == "/chat");
    CHECK(auth.keys->origin().file == file.path);
    REQUIRE(auth.keys->current() != nullptr);
    CHECK(auth.keys->current()->keys.size() == 1);
    CHECK(auth.keys->current()->keys[0].kid == "k1");
    CHECK(auth.keys->stamp == jwks::stamp_of(file.path));
    CHECK(auth.verifier->uses_key_sets());
    CHECK(auth.verifier->algorithms().size() == 6);  // every asymmetric algorithm by default
    CHECK_FALSE(auth.close_on_expiry);
    CHECK(auth.max_sessions_per_subject == 0);
}

TEST_CASE("[route.auth] jwks_url with refresh, algorithms, tls_ca, and the session rules") {
    auto cfg = load_ok(
        "jwks_url = \"https://127.0.0.1:8443/certs\"\njwks_refresh = \"2m\"\nalgorithms = [\"RS256\", \"ES256\"]\n"
        "close_on_expiry = true\nmax_sessions_per_subject = 3\n");
    const auto& auth = *cfg->routes[0].auth;
    REQUIRE(auth.keys != nullptr);
    CHECK(auth.keys->current() == nullptr);  // fetched at run time
    CHECK(auth.keys->origin().url == "https://127.0.0.1:8443/certs");
    CHECK(auth.keys->origin().https.port == 8443);
    CHECK(auth.keys->origin().refresh_ms == 120000);
    CHECK(auth.keys->origin().tls != nullptr);
    CHECK(auth.verifier->algorithms() == std::vector<jwt::Algorithm>{jwt::Algorithm::RS256, jwt::Algorithm::ES256});
    CHECK(auth.close_on_expiry);
    CHECK(auth.max_sessions_per_subject == 3);
    // The default refresh is 5 minutes.
    cfg = load_ok("jwks_url = \"https://idp.example/certs\"\n");
    CHECK(cfg->routes[0].auth->keys->origin().refresh_ms == 300000);
}

TEST_CASE("[route.auth] a key file and a JWK Set conflict; -t names both keys") {
    TempFile file(jwks_of(jwt_test::rsa_2048().get(), "k1"));
    const std::string jwks_file = "jwks_file = \"" + file.path + "\"\n";
    CHECK(error_of("algorithm = \"RS256\"\nkey_file = \"/nonexistent\"\n" + jwks_file) ==
          "t.toml:13:13: route[0].auth.jwks_file: conflicts with key_file at line 12: a route has either a key_file "
          "or a JWK Set (jwks_file or jwks_url)");
    CHECK(error_of(jwks_file + "jwks_url = \"https://idp/x\"\n") ==
          "t.toml:12:12: route[0].auth.jwks_url: conflicts with jwks_file at line 11: a route has either a key_file "
          "or a JWK Set (jwks_file or jwks_url)");
    CHECK(error_of("issuer = \"x\"\n") ==
          "t.toml:10:1: route[0].auth.key_file: required key is missing (or jwks_file, or jwks_url)");
    CHECK(error_of(jwks_file + "algorithm = \"RS256\"\n") ==
          "t.toml:12:13: route[0].auth.algorithm: applies to key_file; with a JWK Set, list algorithms = [...]");
    CHECK(error_of("algorithm = \"RS256\"\nkey_file = \"" + file.path + "\"\nalgorithms = [\"RS256\"]\n") ==
          "t.toml:13:14: route[0].auth.algorithms: applies to a JWK Set (jwks_file or jwks_url); key_file takes "
          "algorithm");
    CHECK(error_of(jwks_file + "jwks_refresh = \"1m\"\n") ==
          "t.toml:12:16: route[0].auth.jwks_refresh: applies to jwks_url only");
    CHECK(error_of(jwks_file + "tls_ca = \"/etc/ssl/ca.pem\"\n") ==
          "t.toml:12:10: route[0].auth.tls_ca: applies to jwks_url only");
}

TEST_CASE("[route.auth] JWK Set values are checked with positions") {
    const std::string url = "jwks_url = \"https://idp.example/certs\"\n";
    CHECK(error_of(url + "algorithms = [\"RS256\", \"none\"]\n") ==
          "t.toml:12:24: route[0].auth.algorithms[1]: \"none\" (unsigned tokens) is never accepted");
    CHECK(error_of(url + "algorithms = [\"HS256\"]\n") ==
          "t.toml:12:15: route[0].auth.algorithms[0]: \"HS256\" needs a shared secret and is never used with a JWK "
          "Set (use key_file)");
    CHECK(error_of(url + "algorithms = [\"HS512\"]\n") ==
          "t.toml:12:15: route[0].auth.algorithms[0]: \"HS512\" needs a shared secret and is never used with a JWK "
          "Set (use key_file)");
    CHECK(error_of(url + "algorithms = [\"rs256\"]\n") ==
          "t.toml:12:15: route[0].auth.algorithms[0]: expected \"RS256\", \"RS384\", \"RS512\", \"PS256\", \"ES256\" "
          "or \"ES384\", got \"rs256\"");
    CHECK(error_of(url + "algorithms = []\n") == "t.toml:12:14: route[0].auth.algorithms: must name at least one algorithm");
    CHECK(error_of("jwks_url = \"http://idp.example/certs\"\n") ==
          "t.toml:11:12: route[0].auth.jwks_url: expected an https:// URL (https://HOST[:PORT]/PATH), got "
          "\"http://idp.example/certs\"");
    CHECK(error_of(url + "jwks_refresh = \"500ms\"\n") ==
          "t.toml:12:16: route[0].auth.jwks_refresh: must be at least \"1s\", got \"500ms\"");
    CHECK(error_of(url + "tls_ca = \"/nonexistent/ca.pem\"\n").find("t.toml:12:10: route[0].auth.tls_ca: "
                                                                   "/nonexistent/ca.pem: cannot load CA certificates") == 0);
    CHECK(error_of(url + "max_sessions_per_subject = -1\n") ==
          "t.toml:12:28: route[0].auth.max_sessions_per_subject: must be a non-negative integer, got -1");
    CHECK(error_of(url + "close_on_expiry = \"yes\"\n") ==
          "t.toml:12:19: route[0].auth.close_on_expiry: expected true or false, got a string");
    CHECK(error_of("jwks_file = \"/nonexistent/jwks.json\"\n") ==
          "t.toml:11:13: route[0].auth.jwks_file: cannot read /nonexistent/jwks.json: No such file or directory");
    TempFile bad("{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}");
    CHECK(error_of("jwks_file = \"" + bad.path + "\"\n") ==
          "t.toml:11:13: route[0].auth.jwks_file: " + bad.path +
              ": the JWK Set holds no usable signature key (key 0: key type \"oct\" is not used (RSA and EC signature "
              "keys only))");
    CHECK(error_of(url + "jwks_rfresh = \"1m\"\n").find("t.toml:12:1: route[0].auth.jwks_rfresh: unknown key") == 0);
}

TEST_CASE("jwks::load_file: stamps follow renames and writes") {
    TempFile file(jwks_of(jwt_test::rsa_2048().get(), "one"));
    auto first = jwks::load_file(file.path);
    REQUIRE(std::holds_alternative<jwks::LoadedFile>(first));
    const auto stamp = std::get<jwks::LoadedFile>(first).stamp;
    CHECK(jwks::stamp_of(file.path) == stamp);
    // Atomic replace: a new inode.
    TempFile next(jwks_of(jwt_test::p256().get(), "two"));
    REQUIRE(std::rename(next.path.c_str(), file.path.c_str()) == 0);
    auto second = jwks::load_file(file.path);
    REQUIRE(std::holds_alternative<jwks::LoadedFile>(second));
    CHECK_FALSE(std::get<jwks::LoadedFile>(second).stamp == stamp);
    CHECK(std::get<jwks::LoadedFile>(second).set.keys[0].kid == "two");
    CHECK(jwks::load_file(file.path, jwks::Limits{.max_bytes = 10, .max_keys = 64}).index() == 1);
    CHECK(std::get<std::string>(jwks::load_file("/tmp")) == "cannot read /tmp: not a regular file");
    CHECK_FALSE(jwks::stamp_of("/nonexistent/x").has_value());
}

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

TEST_CASE("max_sessions_per_subject counts: admitted up to the limit, released, per route") {
    runtime::SubjectLimits limits;
    const std::string alice = runtime::SubjectLimits::key("/chat", "alice");
    const std::string bob = runtime::SubjectLimits::key("/chat", "bob");
    CHECK(alice != runtime::SubjectLimits::key("/other", "alice"));
    CHECK(runtime::SubjectLimits::key("/a", "b/c") != runtime::SubjectLimits::key("/a/b", "c"));
    for (int i = 0; i < 3; ++i) CHECK(limits.acquire(alice, 3));
    CHECK_FALSE(limits.acquire(alice, 3));
    CHECK(limits.acquire(bob, 3));
    CHECK(limits.open(alice) == 3);
    limits.release(alice);
    CHECK(limits.acquire(alice, 3));
    CHECK_FALSE(limits.acquire(alice, 3));
    for (int i = 0; i < 3; ++i) limits.release(alice);
    CHECK(limits.open(alice) == 0);
    limits.release(alice);  // an unknown key is ignored
    CHECK(limits.open(alice) == 0);
    CHECK_FALSE(limits.acquire(runtime::SubjectLimits::key("/chat", "carol"), 0));
    CHECK(limits.open(runtime::SubjectLimits::key("/chat", "carol")) == 0);
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

TEST_CASE("auth metrics render as Prometheus text") {
    obs::AuthMetrics m;
    std::string empty = m.render();
    CHECK(empty.find("# TYPE wsgate_auth_failures_total counter") != std::string::npos);
    CHECK(empty.find("# TYPE wsgate_jwks_keys gauge") != std::string::npos);
    CHECK(empty.find("wsgate_subject_limit_refusals_total 0\n") != std::string::npos);
    m.auth_failure("/chat", "bad signature");
    m.auth_failure("/chat", "bad signature");
    m.auth_failure("x\"y", "missing token");
    m.jwks_fetch("/chat", true);
    m.jwks_fetch("/chat", false);
    m.jwks_keys("/chat", 2);
    m.subject_limit_refusal();
    const std::string text = m.render();
    CHECK(text.find("wsgate_auth_failures_total{route=\"/chat\",reason=\"bad signature\"} 2\n") != std::string::npos);
    CHECK(text.find("wsgate_auth_failures_total{route=\"x\\\"y\",reason=\"missing token\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_jwks_fetches_total{route=\"/chat\",result=\"ok\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_jwks_fetches_total{route=\"/chat\",result=\"error\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_jwks_keys{route=\"/chat\"} 2\n") != std::string::npos);
    CHECK(text.find("wsgate_subject_limit_refusals_total 1\n") != std::string::npos);
    CHECK(m.failures("/chat", "bad signature") == 2);
    CHECK(m.fetches("/chat", false) == 1);
}
