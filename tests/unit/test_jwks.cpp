#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "auth/jwks.h"
#include "auth/jwt.h"
#include "jwt_support.h"

using namespace jwt_test;

namespace {

constexpr std::int64_t now = 1700000000;

std::string jwk(EVP_PKEY* key, std::string_view kid, std::string_view extra = "") {
    std::string out = "{" + jwk_members(key);
    if (!kid.empty()) out += ",\"kid\":\"" + std::string(kid) + "\"";
    if (!extra.empty()) out += "," + std::string(extra);
    return out + "}";
}

std::string set_of(std::initializer_list<std::string> keys) {
    std::string out = "{\"keys\":[";
    bool first = true;
    for (const std::string& k : keys) {
        out += (first ? "" : ",") + k;
        first = false;
    }
    return out + "]}";
}

jwks::KeySet parse_ok(const std::string& text) {
    auto r = jwks::parse(text);
    if (auto* e = std::get_if<std::string>(&r)) FAIL(*e);
    return std::get<jwks::KeySet>(std::move(r));
}

std::string parse_error(const std::string& text) {
    auto r = jwks::parse(text);
    if (std::holds_alternative<jwks::KeySet>(r)) return "parsed";
    return std::get<std::string>(r);
}

jwt::Verifier key_set_verifier(std::vector<Algorithm> algorithms = {Algorithm::RS256, Algorithm::RS384,
                                                                    Algorithm::RS512, Algorithm::PS256,
                                                                    Algorithm::ES256, Algorithm::ES384}) {
    jwt::Options o;
    o.issuer = "https://idp.example/realms/r";
    o.audience = "wsgate";
    o.algorithms = std::move(algorithms);
    auto created = jwt::Verifier::create_for_key_sets(o);
    if (auto* e = std::get_if<std::string>(&created)) FAIL(*e);
    return std::get<jwt::Verifier>(created);
}

const std::string claims = "{\"iss\":\"https://idp.example/realms/r\",\"aud\":\"wsgate\",\"sub\":\"alice\",\"exp\":1700000100}";

std::string header(Algorithm alg, std::string_view kid, std::string_view extra = "") {
    std::string h = "{\"alg\":\"" + std::string(jwt::to_string(alg)) + "\",\"typ\":\"JWT\"";
    if (!kid.empty()) h += ",\"kid\":\"" + std::string(kid) + "\"";
    if (!extra.empty()) h += "," + std::string(extra);
    return h + "}";
}

std::string token_by(Algorithm alg, EVP_PKEY* key, const std::string& header_json,
                     const std::string& payload = claims) {
    std::string input = jwt::base64url_encode(header_json) + "." + jwt::base64url_encode(payload);
    return input + "." + jwt::base64url_encode(signature_by(alg, key, input));
}

std::string_view error_of(const jwt::Verifier& v, const std::string& token, const jwks::KeySet* set) {
    auto r = v.verify(token, now, set);
    return r.ok ? std::string_view("ok") : r.error;
}

}  // namespace

TEST_CASE("JWK Set: RSA and EC keys from their parameters verify tokens of their private halves") {
    const auto set = parse_ok(set_of({jwk(rsa_2048().get(), "rsa-1", "\"use\":\"sig\",\"alg\":\"RS256\""),
                                      jwk(p256().get(), "ec-1"), jwk(p384().get(), "ec-384"),
                                      jwk(rsa_2048_other().get(), "rsa-2", "\"key_ops\":[\"verify\"]")}));
    REQUIRE(set.keys.size() == 4);
    CHECK(set.skipped.empty());
    CHECK(set.keys[0].kid == "rsa-1");
    CHECK(set.keys[0].type == jwks::KeyType::Rsa);
    CHECK(set.keys[0].alg == Algorithm::RS256);
    CHECK(set.keys[1].type == jwks::KeyType::EcP256);
    CHECK(set.keys[2].type == jwks::KeyType::EcP384);
    CHECK_FALSE(set.keys[1].alg.has_value());

    const auto v = key_set_verifier();
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "rsa-1")), &set) == "ok");
    CHECK(error_of(v, token_by(Algorithm::ES256, p256().get(), header(Algorithm::ES256, "ec-1")), &set) == "ok");
    CHECK(error_of(v, token_by(Algorithm::ES384, p384().get(), header(Algorithm::ES384, "ec-384")), &set) == "ok");
    // rsa-2 has no "alg": any RSA algorithm.
    for (Algorithm a : {Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256}) {
        CAPTURE(jwt::to_string(a));
        CHECK(error_of(v, token_by(a, rsa_2048_other().get(), header(a, "rsa-2")), &set) == "ok");
    }
    // rsa-1 is for RS256 only: RS512 with its kid finds no fitting key.
    auto r = v.verify(token_by(Algorithm::RS512, rsa_2048().get(), header(Algorithm::RS512, "rsa-1")), now, &set);
    CHECK(r.error == jwt::reason::unknown_key);
    // The claims are checked as for a key file.
    auto ok = v.verify(token_by(Algorithm::ES256, p256().get(), header(Algorithm::ES256, "ec-1")), now, &set);
    REQUIRE(ok.ok);
    CHECK(ok.claims.claim("sub") == "alice");
    CHECK(ok.claims.expires_at() == 1700000100.0);
    CHECK(error_of(v, token_by(Algorithm::ES256, p256().get(), header(Algorithm::ES256, "ec-1")), &set) == "ok");
    CHECK(v.verify(token_by(Algorithm::ES256, p256().get(), header(Algorithm::ES256, "ec-1")), 1700000100, &set).error ==
          jwt::reason::expired);
}

TEST_CASE("JWK Set: kid selection, unknown kids, and tokens without kid") {
    const auto set = parse_ok(set_of({jwk(rsa_2048().get(), "old"), jwk(rsa_2048_other().get(), "new")}));
    const auto v = key_set_verifier();
    // The kid picks the key: a signature by the other key under this kid fails.
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "old")), &set) == "ok");
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "new")), &set) ==
          jwt::reason::bad_signature);
    // An unknown kid: the caller may refetch.
    auto r = v.verify(token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "rotated")), now, &set);
    CHECK(r.error == jwt::reason::unknown_key);
    CHECK(r.unknown_key_id);
    // Without kid: every fitting key is tried.
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "")), &set) == "ok");
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048_other().get(), header(Algorithm::RS256, "")), &set) == "ok");
    CHECK(error_of(v, token_by(Algorithm::PS256, rsa_2048_other().get(), header(Algorithm::PS256, "")), &set) == "ok");
    // No EC key in the set: an ES256 token without kid has no candidate.
    auto ec = v.verify(token_by(Algorithm::ES256, p256().get(), header(Algorithm::ES256, "")), now, &set);
    CHECK(ec.error == jwt::reason::unknown_key);
    // A kid that is not a string is malformed.
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), "{\"alg\":\"RS256\",\"kid\":7}"), &set) ==
          jwt::reason::malformed);
}

TEST_CASE("JWK Set: tokens without kid try a bounded number of keys") {
    // Six RSA keys without kid; the signer's key is the last: beyond
    // kMaxKeysTried, so it is not reached.
    std::vector<KeyPtr> keys;
    std::string doc = "{\"keys\":[";
    for (int i = 0; i < 5; ++i) {
        doc += jwk(i % 2 ? p256_other().get() : rsa_2048_other().get(), "") + ",";
    }
    doc += jwk(rsa_2048_other().get(), "") + "," + jwk(rsa_2048_other().get(), "") + "," +
           jwk(rsa_2048_other().get(), "") + "," + jwk(rsa_2048().get(), "") + "]}";
    const auto set = parse_ok(doc);
    CHECK(jwks::candidates(set, Algorithm::RS256, std::nullopt, jwt::Verifier::kMaxKeysTried).size() ==
          jwt::Verifier::kMaxKeysTried);
    CHECK(jwks::candidates(set, Algorithm::ES256, std::nullopt, 4).size() == 2);
    CHECK(jwks::candidates(set, Algorithm::ES384, std::nullopt, 4).empty());
    const auto v = key_set_verifier();
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "")), &set) ==
          jwt::reason::bad_signature);
}

TEST_CASE("JWK Set: algorithm confusion and foreign key references are refused") {
    const std::string rsa_jwk = jwk(rsa_2048().get(), "k1");
    const auto set = parse_ok(set_of({rsa_jwk, jwk(p256().get(), "k2")}));
    const auto v = key_set_verifier({Algorithm::RS256, Algorithm::ES256});
    const std::string payload = jwt::base64url_encode(claims);
    // alg none, with and without a signature.
    for (const char* h : {"{\"alg\":\"none\",\"kid\":\"k1\"}", "{\"alg\":\"none\"}", "{\"alg\":\"None\"}"}) {
        CAPTURE(h);
        CHECK(error_of(v, jwt::base64url_encode(h) + "." + payload + ".", &set) == jwt::reason::algorithm_mismatch);
        CHECK(error_of(v, jwt::base64url_encode(h) + "." + payload + ".c2ln", &set) ==
              jwt::reason::algorithm_mismatch);
    }
    // HS256 keyed with the RSA public key (as PEM and as its JWK text).
    for (const std::string& secret : {public_pem(rsa_2048().get()), rsa_jwk}) {
        std::string input = jwt::base64url_encode("{\"alg\":\"HS256\",\"kid\":\"k1\"}") + "." + payload;
        CHECK(error_of(v, input + "." + jwt::base64url_encode(hmac_sha256(secret, input)), &set) ==
              jwt::reason::algorithm_mismatch);
    }
    // An accepted algorithm on the wrong key type: ES256 with the RSA key's kid.
    CHECK(error_of(v, token_by(Algorithm::ES256, p256().get(), header(Algorithm::ES256, "k1")), &set) ==
          jwt::reason::unknown_key);
    // An algorithm the route does not accept, even with a fitting key.
    CHECK(error_of(v, token_by(Algorithm::RS512, rsa_2048().get(), header(Algorithm::RS512, "k1")), &set) ==
          jwt::reason::algorithm_mismatch);
    // jku / x5u / jwk / x5c point at the attacker's key: ignored, so the
    // token is checked against the configured set and fails.
    const std::string evil = jwk(rsa_2048_other().get(), "k1");
    for (const std::string& extra :
         {std::string("\"jku\":\"https://evil.example/jwks.json\""), std::string("\"x5u\":\"https://evil.example/c.pem\""),
          "\"jwk\":" + evil}) {
        CAPTURE(extra);
        CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048_other().get(), header(Algorithm::RS256, "k1", extra)),
                       &set) == jwt::reason::bad_signature);
        // ... and a genuine token carrying them still verifies.
        CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "k1", extra)), &set) ==
              "ok");
    }
    // crit is refused as with a key file.
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "k1", "\"crit\":[\"b64\"]")),
                   &set) == jwt::reason::unsupported_header);
    // No set loaded yet.
    CHECK(error_of(v, token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "k1")), nullptr) ==
          jwt::reason::keys_unavailable);
    // Without a set, a key-set verifier's plain verify() says the same.
    CHECK(v.verify(token_by(Algorithm::RS256, rsa_2048().get(), header(Algorithm::RS256, "k1")), now).error ==
          jwt::reason::keys_unavailable);
}

TEST_CASE("JWK Set verifier creation refuses HS256 and an empty algorithm list") {
    jwt::Options o;
    CHECK(std::get<std::string>(jwt::Verifier::create_for_key_sets(o)) == "JWK Set verifier: no algorithm accepted");
    o.algorithms = {Algorithm::RS256, Algorithm::HS256};
    CHECK(std::get<std::string>(jwt::Verifier::create_for_key_sets(o)) ==
          "JWK Set verifier: HS256 is never used with a JWK Set");
    o.algorithms = {Algorithm::ES256};
    auto v = std::get<jwt::Verifier>(jwt::Verifier::create_for_key_sets(o));
    CHECK(v.uses_key_sets());
}

TEST_CASE("JWK Set: unusable keys are skipped with a reason, bad documents are errors") {
    const std::string good = jwk(rsa_2048().get(), "good");
    struct Case {
        std::string key;
        const char* reason;
    };
    const Case cases[] = {
        {"{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"hmac\"}",
         "key 0 (kid \"hmac\"): key type \"oct\" is not used (RSA and EC signature keys only)"},
        {"{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"}",
         "key 0: key type \"OKP\" is not used (RSA and EC signature keys only)"},
        {jwk(rsa_2048().get(), "e", "\"use\":\"enc\""), "key 0 (kid \"e\"): \"use\" is \"enc\", not \"sig\""},
        {jwk(rsa_2048().get(), "o", "\"key_ops\":[\"encrypt\"]"), "key 0 (kid \"o\"): \"key_ops\" does not include \"verify\""},
        {jwk(rsa_2048().get(), "a", "\"alg\":\"HS256\""), "key 0 (kid \"a\"): algorithm \"HS256\" is not supported"},
        {jwk(rsa_2048().get(), "a", "\"alg\":\"RSA-OAEP\""), "key 0 (kid \"a\"): algorithm \"RSA-OAEP\" is not supported"},
        {jwk(rsa_2048().get(), "a", "\"alg\":\"ES256\""), "key 0 (kid \"a\"): algorithm \"ES256\" does not fit a RSA key"},
        {jwk(p256().get(), "a", "\"alg\":\"ES384\""), "key 0 (kid \"a\"): algorithm \"ES384\" does not fit a EC key"},
        {jwk(rsa_2048().get(), "p", "\"d\":\"AQAB\""), "key 0 (kid \"p\"): a private key (\"d\" present): publish only public keys"},
        {jwk(rsa_key(1024).get(), "small"),
         "key 0 (kid \"small\"): RSA modulus of 1024 bits (2048 to 16384 accepted, RFC 7518 section 3.3)"},
        {"{\"kty\":\"RSA\",\"e\":\"AQAB\"}", "key 0: \"n\" is missing or not a string"},
        {"{\"kty\":\"RSA\",\"n\":\"a+b\",\"e\":\"AQAB\"}", "key 0: \"n\" is not base64url"},
        {"{\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"}", "key 0: curve \"P-521\" is not supported (P-256, P-384)"},
        {"{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}", "key 0: \"x\" and \"y\" must be 32 bytes for P-256"},
        {"{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" + jwt::base64url_encode(std::string(32, '\1')) + "\",\"y\":\"" +
             jwt::base64url_encode(std::string(32, '\2')) + "\"}",
         "key 0: not a point on P-256"},
        {"{\"kid\":5,\"kty\":\"RSA\"}", "key 0: \"kid\" is not a string of at most 256 bytes"},
        {"[1]", "key 0: not a JSON object"},
        {"{\"n\":\"AQAB\"}", "key 0: \"kty\" is missing or not a string"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.key);
        auto set = parse_ok(set_of({c.key, good}));
        CHECK(set.keys.size() == 1);
        CHECK(set.keys[0].kid == "good");
        REQUIRE(set.skipped.size() == 1);
        CHECK(set.skipped[0] == c.reason);
        // Alone, it leaves no usable key: an error naming the first reason.
        CHECK(parse_error(set_of({c.key})) == std::string("the JWK Set holds no usable signature key (") + c.reason + ")");
    }
    CHECK(parse_error("") .rfind("not a JWK Set: ", 0) == 0);
    CHECK(parse_error("[]") == "not a JWK Set: the document is not a JSON object");
    CHECK(parse_error("{}") == "not a JWK Set: no \"keys\" array (RFC 7517 section 5)");
    CHECK(parse_error("{\"keys\":{}}") == "not a JWK Set: no \"keys\" array (RFC 7517 section 5)");
    CHECK(parse_error("{\"keys\":[]}") == "the JWK Set holds no usable signature key");
    CHECK(parse_error("{\"keys\":[" + good + "],\"keys\":[]}") == "not a JWK Set: duplicate member name \"keys\"");
    std::string many = "{\"keys\":[";
    for (int i = 0; i < 65; ++i) many += std::string(i ? "," : "") + "{}";
    CHECK(parse_error(many + "]}") == "the JWK Set has 65 keys, more than 64");
    // Members the parser does not use are fine (x5c, x5t, ...), as are extra top-level members.
    auto set = parse_ok("{\"keys\":[" + jwk(p256().get(), "x", "\"x5t\":\"abc\",\"x5c\":[\"MIIB\"]") + "],\"extra\":1}");
    CHECK(set.keys.size() == 1);
}

TEST_CASE("JWK Set: fits() binds algorithms to key types") {
    const auto set = parse_ok(set_of({jwk(rsa_2048().get(), "r"), jwk(p256().get(), "e2"), jwk(p384().get(), "e3")}));
    const jwks::Key& rsa = set.keys[0];
    const jwks::Key& ec256 = set.keys[1];
    const jwks::Key& ec384 = set.keys[2];
    for (Algorithm a : {Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256}) {
        CHECK(jwks::fits(rsa, a));
        CHECK_FALSE(jwks::fits(ec256, a));
    }
    CHECK_FALSE(jwks::fits(rsa, Algorithm::HS256));
    CHECK_FALSE(jwks::fits(rsa, Algorithm::ES256));
    CHECK(jwks::fits(ec256, Algorithm::ES256));
    CHECK_FALSE(jwks::fits(ec256, Algorithm::ES384));
    CHECK(jwks::fits(ec384, Algorithm::ES384));
    CHECK_FALSE(jwks::fits(ec384, Algorithm::ES256));
}

TEST_CASE("jwks_url: https URLs only, split for the fetcher") {
    auto u = jwks::parse_https_url("https://keycloak.example/realms/r/protocol/openid-connect/certs");
    REQUIRE(u);
    CHECK(u->host == "keycloak.example");
    CHECK(u->port == 443);
    CHECK(u->path_and_query == "/realms/r/protocol/openid-connect/certs");
    u = jwks::parse_https_url("HTTPS://127.0.0.1:8443");
    REQUIRE(u);
    CHECK(u->host == "127.0.0.1");
    CHECK(u->port == 8443);
    CHECK(u->path_and_query == "/");
    u = jwks::parse_https_url("https://[::1]:9443/jwks?x=1");
    REQUIRE(u);
    CHECK(u->host == "::1");
    CHECK(u->port == 9443);
    CHECK(u->path_and_query == "/jwks?x=1");
    u = jwks::parse_https_url("https://idp.example?x");
    REQUIRE(u);
    CHECK(u->path_and_query == "/?x");
    for (const char* bad : {"http://idp.example/jwks", "https://", "https:///x", "https://user@idp/x",
                            "https://idp:0/", "https://idp:65536/", "https://idp:x/", "https://idp:/",
                            "https://[::1/", "https://[]/", "https://::1/", "https://idp/a b", "https://idp/#f",
                            "ftp://idp/", "idp.example/jwks"}) {
        CAPTURE(bad);
        CHECK_FALSE(jwks::parse_https_url(bad).has_value());
    }
}
