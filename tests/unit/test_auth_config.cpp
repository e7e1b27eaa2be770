// [route.auth] with JWK Sets (issue 19): jwks_file, jwks_url, jwks_refresh,
// algorithms, tls_ca, close_on_expiry, max_sessions_per_subject; the
// conflict with key_file; exact error texts. The runtime pieces behind them
// have files of their own: test_key_source, test_jwks_fetcher,
// test_subject_limits, test_token_check, test_auth_metrics.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "auth/key_source.h"
#include "config/config.h"
#include "jwt_support.h"

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

}  // namespace

TEST_CASE("[route.auth] jwks_file: read at load, published, with defaults") {
    jwt_test::TempFile file(jwt_test::jwks_of(jwt_test::rsa_2048().get(), "k1"));
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
    jwt_test::TempFile file(jwt_test::jwks_of(jwt_test::rsa_2048().get(), "k1"));
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
    jwt_test::TempFile bad("{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}");
    CHECK(error_of("jwks_file = \"" + bad.path + "\"\n") ==
          "t.toml:11:13: route[0].auth.jwks_file: " + bad.path +
              ": the JWK Set holds no usable signature key (key 0: key type \"oct\" is not used (RSA and EC signature "
              "keys only))");
    CHECK(error_of(url + "jwks_rfresh = \"1m\"\n").find("t.toml:12:1: route[0].auth.jwks_rfresh: unknown key") == 0);
}

