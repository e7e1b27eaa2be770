#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "auth/jwt.h"
#include "jwt_support.h"

using jwt::Algorithm;

namespace {

using namespace jwt_test;

jwt::Options options_for(Algorithm algorithm) {
    jwt::Options o;
    o.algorithm = algorithm;
    o.key = algorithm == Algorithm::HS256 ? hs_secret : public_pem(key_for(algorithm).get());
    o.issuer = "https://issuer.example";
    o.audience = "wsgate";
    return o;
}

jwt::Verifier make_verifier(const jwt::Options& options) {
    auto created = jwt::Verifier::create(options);
    if (auto* e = std::get_if<std::string>(&created)) FAIL(*e);
    return std::get<jwt::Verifier>(created);
}

std::string create_error(const jwt::Options& options) {
    auto created = jwt::Verifier::create(options);
    if (std::holds_alternative<jwt::Verifier>(created)) return "created";
    return std::get<std::string>(created);
}

constexpr std::int64_t now = 1700000000;

std::string claims_with(std::string_view extra) {
    std::string base = "{\"iss\":\"https://issuer.example\",\"aud\":\"wsgate\",\"sub\":\"user-1\"";
    if (!extra.empty()) base += "," + std::string(extra);
    return base + "}";
}

std::string_view error_of(const jwt::Verifier& v, const std::string& token, std::int64_t at = now) {
    auto r = v.verify(token, at);
    if (r.ok) return "ok";
    return r.error;
}

const Algorithm all_algorithms[] = {Algorithm::HS256, Algorithm::RS256, Algorithm::RS384, Algorithm::RS512,
                                    Algorithm::PS256, Algorithm::ES256, Algorithm::ES384};

}  // namespace

TEST_CASE("RFC 7515 appendix A.1: the HS256 example verifies") {
    jwt::Options o;
    o.algorithm = Algorithm::HS256;
    o.key = *jwt::base64url_decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow");
    auto v = make_verifier(o);
    const std::string token =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    auto r = v.verify(token, 1300819370);
    REQUIRE(r.ok);
    CHECK(r.claims.claim("iss") == "joe");
    CHECK(r.claims.claim("exp") == "1300819380");
    CHECK(r.claims.claim("http://example.com/is_root") == "true");
    // Its exp is in 2011.
    CHECK(v.verify(token, 1300819380).error == jwt::reason::expired);
    // One flipped signature character.
    std::string forged = token;
    forged.back() = 'Y';
    CHECK(v.verify(forged, 1300819370).error == jwt::reason::bad_signature);
    // The issuer check applies when configured.
    o.issuer = "joe";
    CHECK(make_verifier(o).verify(token, 1300819370).ok);
    o.issuer = "jane";
    CHECK(make_verifier(o).verify(token, 1300819370).error == jwt::reason::wrong_issuer);
}

TEST_CASE("every algorithm: valid, time, issuer and audience checks") {
    for (Algorithm alg : all_algorithms) {
        CAPTURE(jwt::to_string(alg));
        auto v = make_verifier(options_for(alg));
        CHECK(v.algorithm() == alg);

        // Valid, with claims.
        auto r = v.verify(sign(alg, claims_with("\"exp\":1700000100,\"nbf\":1699999900,\"n\":42")), now);
        REQUIRE(r.ok);
        CHECK(r.error.empty());
        CHECK(r.claims.claim("sub") == "user-1");
        CHECK(r.claims.claim("n") == "42");

        // exp: now must be strictly before exp.
        CHECK(error_of(v, sign(alg, claims_with("\"exp\":1700000001"))) == "ok");
        CHECK(error_of(v, sign(alg, claims_with("\"exp\":1700000000"))) == jwt::reason::expired);
        CHECK(error_of(v, sign(alg, claims_with("\"exp\":1699999999.5"))) == jwt::reason::expired);
        CHECK(error_of(v, sign(alg, claims_with("\"exp\":1"))) == jwt::reason::expired);

        // nbf: now may equal nbf.
        CHECK(error_of(v, sign(alg, claims_with("\"nbf\":1700000000"))) == "ok");
        CHECK(error_of(v, sign(alg, claims_with("\"nbf\":1700000001"))) == jwt::reason::not_yet_valid);

        // exp/nbf must be numbers.
        CHECK(error_of(v, sign(alg, claims_with("\"exp\":\"1800000000\""))) == jwt::reason::malformed);
        CHECK(error_of(v, sign(alg, claims_with("\"nbf\":null"))) == jwt::reason::malformed);

        // Issuer.
        CHECK(error_of(v, sign(alg, "{\"iss\":\"https://evil.example\",\"aud\":\"wsgate\"}")) ==
              jwt::reason::wrong_issuer);
        CHECK(error_of(v, sign(alg, "{\"aud\":\"wsgate\"}")) == jwt::reason::wrong_issuer);
        CHECK(error_of(v, sign(alg, "{\"iss\":[\"https://issuer.example\"],\"aud\":\"wsgate\"}")) ==
              jwt::reason::wrong_issuer);

        // Audience: a string or an array of strings.
        const std::string iss = "\"iss\":\"https://issuer.example\"";
        CHECK(error_of(v, sign(alg, "{" + iss + ",\"aud\":\"other\"}")) == jwt::reason::wrong_audience);
        CHECK(error_of(v, sign(alg, "{" + iss + "}")) == jwt::reason::wrong_audience);
        CHECK(error_of(v, sign(alg, "{" + iss + ",\"aud\":[\"a\",\"wsgate\"]}")) == "ok");
        CHECK(error_of(v, sign(alg, "{" + iss + ",\"aud\":[\"a\",\"b\"]}")) == jwt::reason::wrong_audience);
        CHECK(error_of(v, sign(alg, "{" + iss + ",\"aud\":[]}")) == jwt::reason::wrong_audience);
        CHECK(error_of(v, sign(alg, "{" + iss + ",\"aud\":[[\"wsgate\"]]}")) == jwt::reason::wrong_audience);
        CHECK(error_of(v, sign(alg, "{" + iss + ",\"aud\":\"WSGATE\"}")) == jwt::reason::wrong_audience);
    }
}

TEST_CASE("leeway widens exp and nbf by the configured seconds") {
    for (Algorithm alg : all_algorithms) {
        CAPTURE(jwt::to_string(alg));
        auto o = options_for(alg);
        o.leeway_seconds = 30;
        auto v = make_verifier(o);
        CHECK(error_of(v, sign(alg, claims_with("\"exp\":1699999971"))) == "ok");
        CHECK(error_of(v, sign(alg, claims_with("\"exp\":1699999970"))) == jwt::reason::expired);
        CHECK(error_of(v, sign(alg, claims_with("\"nbf\":1700000030"))) == "ok");
        CHECK(error_of(v, sign(alg, claims_with("\"nbf\":1700000031"))) == jwt::reason::not_yet_valid);
    }
}

TEST_CASE("without configured issuer and audience, only a token naming an audience is refused") {
    for (Algorithm alg : all_algorithms) {
        CAPTURE(jwt::to_string(alg));
        auto o = options_for(alg);
        o.issuer.reset();
        o.audience.reset();
        auto v = make_verifier(o);
        CHECK(error_of(v, sign(alg, "{}")) == "ok");
        CHECK(error_of(v, sign(alg, "{\"iss\":\"anyone\"}")) == "ok");
        // RFC 7519 §4.1.3: we cannot identify with any audience.
        CHECK(error_of(v, sign(alg, "{\"aud\":\"someone\"}")) == jwt::reason::wrong_audience);
    }
}

TEST_CASE("every algorithm: forged, confused and malformed tokens are refused") {
    for (Algorithm alg : all_algorithms) {
        CAPTURE(jwt::to_string(alg));
        auto v = make_verifier(options_for(alg));
        const std::string payload = claims_with("");
        const std::string good = sign(alg, payload);
        REQUIRE(error_of(v, good) == "ok");

        // Signed by another key.
        CHECK(error_of(v, sign(alg, header_for(alg), payload, true)) == jwt::reason::bad_signature);
        // Payload swapped after signing.
        {
            std::string other = sign(alg, claims_with("\"admin\":true"));
            std::string spliced = good.substr(0, good.find('.')) + other.substr(other.find('.'), other.rfind('.') - other.find('.')) +
                                  good.substr(good.rfind('.'));
            CHECK(error_of(v, spliced) == jwt::reason::bad_signature);
        }
        // Signature bytes altered, truncated, emptied, extended.
        {
            std::string sig = *jwt::base64url_decode(good.substr(good.rfind('.') + 1));
            std::string head = good.substr(0, good.rfind('.') + 1);
            std::string flipped = sig;
            flipped[sig.size() / 2] ^= 0x01;
            CHECK(error_of(v, head + jwt::base64url_encode(flipped)) == jwt::reason::bad_signature);
            CHECK(error_of(v, head + jwt::base64url_encode(sig.substr(1))) == jwt::reason::bad_signature);
            CHECK(error_of(v, head) == jwt::reason::bad_signature);
            CHECK(error_of(v, head + jwt::base64url_encode(sig + "x")) == jwt::reason::bad_signature);
        }

        // alg "none" and every other algorithm name.
        const std::string none = jwt::base64url_encode("{\"alg\":\"none\"}") + "." +
                                 jwt::base64url_encode(payload) + ".";
        CHECK(error_of(v, none) == jwt::reason::algorithm_mismatch);
        for (const char* name : {"HS256", "RS256", "ES256", "HS512", "hs256", "PS256", ""}) {
            if (name == jwt::to_string(alg)) continue;
            CAPTURE(name);
            std::string header = std::string("{\"alg\":\"") + name + "\"}";
            CHECK(error_of(v, sign(alg, header, payload)) == jwt::reason::algorithm_mismatch);
        }
        // alg missing or not a string.
        CHECK(error_of(v, sign(alg, "{\"typ\":\"JWT\"}", payload)) == jwt::reason::malformed);
        CHECK(error_of(v, sign(alg, "{\"alg\":256}", payload)) == jwt::reason::malformed);
        // Duplicate "alg" (a parser that kept the first or last would differ).
        CHECK(error_of(v, sign(alg, "{\"alg\":\"none\",\"alg\":\"" + std::string(jwt::to_string(alg)) + "\"}",
                               payload)) == jwt::reason::malformed);
        // crit names an extension we do not understand (RFC 7515 §4.1.11).
        CHECK(error_of(v, sign(alg, "{\"alg\":\"" + std::string(jwt::to_string(alg)) +
                                        "\",\"crit\":[\"exp\"],\"exp\":1}",
                               payload)) == jwt::reason::unsupported_header);

        // Bad JSON, correctly signed: header and payload.
        CHECK(error_of(v, sign(alg, "{\"alg\":", payload)) == jwt::reason::malformed);
        CHECK(error_of(v, sign(alg, "[\"" + std::string(jwt::to_string(alg)) + "\"]", payload)) ==
              jwt::reason::malformed);
        CHECK(error_of(v, sign(alg, "{\"sub\":\"x\",}")) == jwt::reason::malformed);
        CHECK(error_of(v, sign(alg, "[1,2]")) == jwt::reason::malformed);
        CHECK(error_of(v, sign(alg, "\"just a string\"")) == jwt::reason::malformed);
        CHECK(error_of(v, sign(alg, "{\"sub\":\"a\",\"sub\":\"b\"}")) == jwt::reason::malformed);
        CHECK(error_of(v, sign(alg, "{\"sub\":\"\xff\"}")) == jwt::reason::malformed);

        // Structure and base64url.
        const auto dot1 = good.find('.');
        const auto dot2 = good.rfind('.');
        CHECK(error_of(v, "") == jwt::reason::malformed);
        CHECK(error_of(v, "abc") == jwt::reason::malformed);
        CHECK(error_of(v, good.substr(0, dot2)) == jwt::reason::malformed);
        CHECK(error_of(v, good + ".") == jwt::reason::malformed);
        CHECK(error_of(v, good + ".e30") == jwt::reason::malformed);
        CHECK(error_of(v, good.substr(dot1)) == jwt::reason::malformed);
        CHECK(error_of(v, good.substr(0, dot1 + 1) + good.substr(dot2)) == jwt::reason::malformed);
        CHECK(error_of(v, good + "=") == jwt::reason::malformed);
        CHECK(error_of(v, good.substr(0, dot1) + "=" + good.substr(dot1)) == jwt::reason::malformed);
        std::string plus = good;
        plus[dot1 + 1] = '+';
        CHECK(error_of(v, plus) == jwt::reason::malformed);
        std::string space = good;
        space[dot1 + 1] = ' ';
        CHECK(error_of(v, space) == jwt::reason::malformed);
        CHECK(error_of(v, " " + good) == jwt::reason::malformed);

        // Too large.
        auto small = options_for(alg);
        small.max_token_bytes = good.size() - 1;
        CHECK(error_of(make_verifier(small), good) == jwt::reason::too_large);
        small.max_token_bytes = good.size();
        CHECK(error_of(make_verifier(small), good) == "ok");
    }
}

TEST_CASE("algorithm confusion: an HS256 token keyed with the RSA public key is refused") {
    auto o = options_for(Algorithm::RS256);
    auto v = make_verifier(o);
    // The attacker knows the public PEM and uses it as an HMAC secret.
    std::string signing_input = jwt::base64url_encode("{\"alg\":\"HS256\"}") + "." +
                                jwt::base64url_encode(claims_with(""));
    std::string token = signing_input + "." + jwt::base64url_encode(hmac_sha256(o.key, signing_input));
    CHECK(error_of(v, token) == jwt::reason::algorithm_mismatch);
}

TEST_CASE("ES256 signatures must be exactly 64 raw bytes, with or without high bits") {
    auto v = make_verifier(options_for(Algorithm::ES256));
    // Many signatures: R or S with a leading zero byte or the top bit set
    // exercise every DER integer shape.
    int verified = 0;
    for (int i = 0; i < 64; ++i) {
        std::string token = sign(Algorithm::ES256, claims_with("\"i\":" + std::to_string(i)));
        verified += error_of(v, token) == "ok" ? 1 : 0;
    }
    CHECK(verified == 64);
    // A DER signature (what OpenSSL produces) is not the JWS form.
    std::string signing_input = jwt::base64url_encode(header_for(Algorithm::ES256)) + "." +
                                jwt::base64url_encode(claims_with(""));
    std::string der = digest_sign(p256().get(), signing_input);
    CHECK(error_of(v, signing_input + "." + jwt::base64url_encode(der)) == jwt::reason::bad_signature);
    // All-zero R and S.
    CHECK(error_of(v, signing_input + "." + jwt::base64url_encode(std::string(64, '\0'))) ==
          jwt::reason::bad_signature);
}

TEST_CASE("verifier creation checks keys and reports sentences") {
    jwt::Options o;
    o.algorithm = Algorithm::HS256;
    o.key = std::string(31, 'k');
    CHECK(create_error(o) == "HS256 key: the secret must be at least 32 bytes (RFC 7518 section 3.2)");
    o.key = std::string(32, 'k');
    CHECK(create_error(o) == "created");
    o.leeway_seconds = -1;
    CHECK(create_error(o) == "HS256 verifier: leeway must not be negative");

    o = {};
    o.algorithm = Algorithm::RS256;
    o.key = "not a key";
    CHECK(create_error(o) == "RS256 key: no PEM public key or certificate found");
    o.key = private_pem(rsa_2048().get());
    CHECK(create_error(o) == "RS256 key: a private key was given; give the public key or a certificate");
    o.key = public_pem(p256().get());
    CHECK(create_error(o) == "RS256 key: not an RSA key");
    o.key = public_pem(rsa_key(1024).get());
    CHECK(create_error(o) == "RS256 key: RSA keys must have at least 2048 bits (RFC 7518 section 3.3)");
    o.key = certificate_pem(rsa_2048().get());
    CHECK(create_error(o) == "created");

    o.algorithm = Algorithm::ES256;
    o.key = public_pem(rsa_2048().get());
    CHECK(create_error(o) == "ES256 key: not an EC key");
    o.key = public_pem(ec_key("P-384").get());
    CHECK(create_error(o) == "ES256 key: the EC key is not on curve P-256");
    o.key = "";
    CHECK(create_error(o) == "ES256 key: no PEM public key or certificate found");
    o.key = certificate_pem(p256().get());
    CHECK(create_error(o) == "created");
}

TEST_CASE("a verifier built from a certificate verifies tokens of its key") {
    for (Algorithm alg : {Algorithm::RS256, Algorithm::ES256}) {
        CAPTURE(jwt::to_string(alg));
        auto o = options_for(alg);
        o.key = certificate_pem((alg == Algorithm::RS256 ? rsa_2048() : p256()).get());
        auto v = make_verifier(o);
        CHECK(error_of(v, sign(alg, claims_with(""))) == "ok");
        CHECK(error_of(v, sign(alg, header_for(alg), claims_with(""), true)) == jwt::reason::bad_signature);
    }
}

TEST_CASE("claims render as text; header_value refuses control characters") {
    auto o = options_for(Algorithm::HS256);
    o.issuer.reset();
    o.audience.reset();
    auto v = make_verifier(o);
    auto r = v.verify(sign(Algorithm::HS256,
                           "{\"sub\":42,\"name\":\"J\\u00f6rg \\ud83d\\ude00\",\"admin\":false,"
                           "\"roles\":[\"a\",\"b\"],\"ctx\":{\"k\":1.5},\"gone\":null,"
                           "\"evil\":\"x\\r\\nX-Admin: 1\",\"tab\":\"a\\tb\",\"big\":1e300}"),
                      now);
    REQUIRE(r.ok);
    CHECK(r.claims.claim("sub") == "42");
    CHECK(r.claims.claim("name") == "J\xc3\xb6rg \xf0\x9f\x98\x80");
    CHECK(r.claims.claim("admin") == "false");
    CHECK(r.claims.claim("roles") == "[\"a\",\"b\"]");
    CHECK(r.claims.claim("ctx") == "{\"k\":1.5}");
    CHECK(r.claims.claim("big") == "1e+300");
    CHECK_FALSE(r.claims.claim("gone").has_value());
    CHECK_FALSE(r.claims.claim("missing").has_value());
    CHECK(r.claims.claim("evil") == "x\r\nX-Admin: 1");
    CHECK_FALSE(r.claims.header_value("evil").has_value());
    CHECK(r.claims.header_value("tab") == "a\tb");
    CHECK(r.claims.header_value("sub") == "42");
    CHECK(r.claims.header_value("name") == "J\xc3\xb6rg \xf0\x9f\x98\x80");
    REQUIRE(r.claims.payload() != nullptr);
    CHECK(r.claims.payload()->is_object());
}

TEST_CASE("base64url is strict and round-trips") {
    const std::string_view samples[] = {"",     "f",      "fo",           "foo",
                                        "foob", "fooba",  "foobar",       "\xff\xfe\xfd",
                                        std::string_view("\x00\x01", 2)};
    for (std::string_view bytes : samples) {
        CAPTURE(bytes);
        auto encoded = jwt::base64url_encode(bytes);
        CHECK(encoded.find('=') == std::string::npos);
        CHECK(jwt::base64url_decode(encoded) == std::string(bytes));
    }
    CHECK(jwt::base64url_encode("foobar") == "Zm9vYmFy");
    CHECK(jwt::base64url_encode("fo") == "Zm8");
    CHECK(jwt::base64url_encode("\xfb\xff") == "-_8");
    CHECK(jwt::base64url_decode("-_8") == std::string("\xfb\xff"));
    CHECK_FALSE(jwt::base64url_decode("Zm8=").has_value());    // padding
    CHECK_FALSE(jwt::base64url_decode("+/8").has_value());     // standard alphabet
    CHECK_FALSE(jwt::base64url_decode("Z").has_value());       // length 1 mod 4
    CHECK_FALSE(jwt::base64url_decode("Zm9vY").has_value());
    CHECK_FALSE(jwt::base64url_decode("Zm9").has_value());     // unused bits set ("Zm8" is canonical)
    CHECK_FALSE(jwt::base64url_decode("Zh").has_value());      // "Zg" is canonical
    CHECK(jwt::base64url_decode("Zg") == "f");
    CHECK_FALSE(jwt::base64url_decode("Zm 9v").has_value());
    CHECK_FALSE(jwt::base64url_decode(std::string_view("Zm\0v", 4)).has_value());
}

TEST_CASE("algorithm names") {
    CHECK(jwt::algorithm_from_string("HS256") == Algorithm::HS256);
    CHECK(jwt::algorithm_from_string("RS256") == Algorithm::RS256);
    CHECK(jwt::algorithm_from_string("ES256") == Algorithm::ES256);
    CHECK_FALSE(jwt::algorithm_from_string("none").has_value());
    CHECK_FALSE(jwt::algorithm_from_string("hs256").has_value());
    CHECK(jwt::to_string(Algorithm::ES256) == "ES256");
}

TEST_CASE("bearer token from an Authorization value") {
    struct Case {
        const char* value;
        const char* token;  // nullptr: none
    };
    const Case cases[] = {
        {"Bearer abc.def.ghi", "abc.def.ghi"},
        {"bearer abc", "abc"},
        {"BEARER   abc", "abc"},
        {"  Bearer abc  ", "abc"},
        {"Bearer a-b_c~d+e/f==", "a-b_c~d+e/f=="},
        {"Bearer", nullptr},
        {"Bearer ", nullptr},
        {"Bearerabc", nullptr},
        {"Bearer\tabc", nullptr},
        {"Basic YWxhZGRpbjpvcGVuc2VzYW1l", nullptr},
        {"Bearer abc def", nullptr},
        {"Bearer ab=c", nullptr},
        {"Bearer =abc", nullptr},
        {"Bearer abc,", nullptr},
        {"", nullptr},
    };
    for (const auto& c : cases) {
        CAPTURE(c.value);
        auto token = jwt::bearer_token(c.value);
        if (c.token == nullptr) {
            CHECK_FALSE(token.has_value());
        } else {
            CHECK(token == c.token);
        }
    }
}

TEST_CASE("token from a query parameter") {
    CHECK(jwt::query_value("token=abc", "token") == "abc");
    CHECK(jwt::query_value("room=1&token=abc.def&x", "token") == "abc.def");
    CHECK(jwt::query_value("token=a%2Eb%2ec", "token") == "a.b.c");
    CHECK(jwt::query_value("to%6Ben=abc", "token") == "abc");
    CHECK(jwt::query_value("token=a+b", "token") == "a+b");
    CHECK(jwt::query_value("token=first&token=second", "token") == "first");
    CHECK(jwt::query_value("token", "token") == "");
    CHECK(jwt::query_value("token=", "token") == "");
    CHECK(jwt::query_value("xtoken=abc", "token") == std::nullopt);
    CHECK(jwt::query_value("", "token") == std::nullopt);
    CHECK(jwt::query_value("token=ab%", "token") == std::nullopt);
    CHECK(jwt::query_value("token=ab%4", "token") == std::nullopt);
    CHECK(jwt::query_value("token=ab%zz", "token") == std::nullopt);
    CHECK(jwt::query_value("%zz=1&token=ok", "token") == "ok");
}
