// Verification of JSON Web Tokens (RFC 7519) in the JWS compact
// serialisation (RFC 7515 §7.1) at the edge, before a WebSocket upgrade is
// forwarded: one configured algorithm and key per route (key_file), or the
// keys of a JWK Set (auth/jwks.h) with a list of accepted algorithms;
// standard time, issuer and audience checks, and the claims for forwarding.
// Pure apart from OpenSSL 3 EVP: no sockets, no clocks (the caller passes
// the time), no globals. Also the pure helpers that find the token in a
// request.
//
// Supported algorithms (RFC 7518 §3.1): HS256 (HMAC SHA-256, shared
// secret, key_file only), RS256/384/512 (RSASSA-PKCS1-v1_5), PS256
// (RSASSA-PSS SHA-256, MGF1 SHA-256, salt = 32 bytes) and ES256/ES384 (ECDSA
// P-256 SHA-256 / P-384 SHA-384). A token's "alg" header must name exactly
// the configured algorithm (or one of the accepted ones with a JWK Set):
// "none" and every other value are refused, which closes the classic
// algorithm-confusion attacks (RFC 8725 §2.1, §3.1). A key is only ever
// used with algorithms of its own type (an RSA key never as an HMAC
// secret). Header parameters that point at keys elsewhere ("jku", "x5u",
// "jwk", "x5c") are ignored: keys come from the configuration only.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "auth/json.h"

namespace jwks {
struct KeySet;
}

namespace jwt {

enum class Algorithm { HS256, RS256, RS384, RS512, PS256, ES256, ES384 };

// "HS256", "RS256", ... (case-sensitive, as in the "alg" header).
std::optional<Algorithm> algorithm_from_string(std::string_view name);
std::string_view to_string(Algorithm algorithm);

// Failure reasons: static text for logs and the 401 body; compare with ==.
namespace reason {
inline constexpr std::string_view too_large = "token too large";
inline constexpr std::string_view malformed = "malformed token";
inline constexpr std::string_view unsupported_header = "unsupported critical header";
inline constexpr std::string_view algorithm_mismatch = "algorithm mismatch";
inline constexpr std::string_view bad_signature = "bad signature";
inline constexpr std::string_view expired = "token expired";
inline constexpr std::string_view not_yet_valid = "token not yet valid";
inline constexpr std::string_view wrong_issuer = "wrong issuer";
inline constexpr std::string_view wrong_audience = "wrong audience";
// JWK Set routes only:
inline constexpr std::string_view keys_unavailable = "signing keys unavailable";  // no set loaded yet
inline constexpr std::string_view unknown_key = "unknown signing key";  // no key with its kid (or alg)
}  // namespace reason

struct Options {
    Algorithm algorithm = Algorithm::HS256;
    // HS256: the shared secret, exactly these bytes (at least 32 of them,
    // RFC 7518 §3.2). RS256 / ES256: a PEM public key ("BEGIN PUBLIC KEY")
    // or certificate ("BEGIN CERTIFICATE"); RSA keys of at least 2048 bits
    // (RFC 7518 §3.3), EC keys on P-256.
    std::string key;
    std::optional<std::string> issuer;    // required "iss" value, when set
    std::optional<std::string> audience;  // required member of "aud", when set
    std::int64_t leeway_seconds = 0;      // clock skew allowed on exp and nbf
    std::size_t max_token_bytes = 8192;
    // JWK Set routes (Verifier::create_for_key_sets): the accepted "alg"
    // values; never HS256 (and "none" has no Algorithm at all).
    std::vector<Algorithm> algorithms;
};

// The claims set of a verified token (its payload, a JSON object).
class Claims {
public:
    Claims() = default;
    explicit Claims(std::shared_ptr<const json::Value> payload) : payload_(std::move(payload)) {}

    // A top-level claim as text: a string as its (unescaped) value, a number
    // in its canonical text ("sub": 42 gives "42"), true/false as "true" /
    // "false", an array or object as compact JSON. nullopt when the claim is
    // absent or null.
    std::optional<std::string> claim(std::string_view name) const;

    // claim(), but nullopt also when the text cannot be an HTTP field value
    // (RFC 9110 §5.5: a control character other than HTAB, or DEL): the
    // claim came from the token issuer, who must not be able to inject
    // header lines when claims are forwarded as headers.
    std::optional<std::string> header_value(std::string_view name) const;

    // The payload object; nullptr for a default-constructed Claims.
    const json::Value* payload() const { return payload_.get(); }

    // "exp" as seconds since the epoch, when present (a number: verify()
    // refuses any other type).
    std::optional<double> expires_at() const;

private:
    std::shared_ptr<const json::Value> payload_;
};

struct Result {
    bool ok = false;
    std::string_view error;  // when !ok: one of jwt::reason
    Claims claims;           // when ok
    // JWK Set routes: the token names a kid the set does not hold (or, with
    // no kid, no key fits its alg). Signing keys may have rotated: the
    // caller may ask for a refetch (rate-limited).
    bool unknown_key_id = false;
};

// Built once per configuration generation; verify() is const and safe to
// call from several threads at once (OpenSSL 3 EVP_PKEY objects may be
// shared read-only).
class Verifier {
public:
    // Loads and checks the key. The error is a sentence for the config
    // layer: "RS256 key: no PEM public key or certificate found", ...
    static std::variant<Verifier, std::string> create(const Options& options);
    // A verifier of tokens signed by keys of a JWK Set given at verify time
    // (options.key unused; options.algorithms not empty, no HS256).
    static std::variant<Verifier, std::string> create_for_key_sets(const Options& options);

    // Verifies <token> at <now_seconds> (Unix time), in this order:
    //  - size, three base64url segments, a JSON object header (duplicate
    //    names refused) -> too_large / malformed;
    //  - "crit" present (RFC 7515 §4.1.11: we understand no extension)
    //    -> unsupported_header;
    //  - "alg" equal to the configured algorithm -> algorithm_mismatch;
    //  - the signature over "header.payload" -> bad_signature;
    //  - the payload is a JSON object whose exp/nbf, when present, are
    //    numbers -> malformed;
    //  - exp (RFC 7519 §4.1.4): now must be before exp + leeway -> expired;
    //  - nbf (§4.1.5): now + leeway must not be before nbf -> not_yet_valid;
    //  - iss (§4.1.1): equal to the configured issuer -> wrong_issuer;
    //  - aud (§4.1.3): a string or an array of strings containing the
    //    configured audience. A token that names an audience while none is
    //    configured is refused too (§4.1.3: "If the principal processing
    //    the claim does not identify itself with a value in the "aud"
    //    claim when this claim is present, then the JWT MUST be rejected")
    //    -> wrong_audience.
    Result verify(std::string_view token, std::int64_t now_seconds) const;

    // The same for a JWK Set verifier, against <keys> (nullptr: no set has
    // been loaded yet -> keys_unavailable). "alg" must be one of
    // options.algorithms (-> algorithm_mismatch); then the key: with a
    // "kid", the keys of <keys> with that kid whose type and "alg" fit;
    // without one, every key that fits, at most kMaxKeysTried of them
    // (-> unknown_key, unknown_key_id set, when there is none).
    Result verify(std::string_view token, std::int64_t now_seconds, const jwks::KeySet* keys) const;

    Algorithm algorithm() const { return options_.algorithm; }
    bool uses_key_sets() const { return key_sets_; }
    const std::vector<Algorithm>& algorithms() const { return options_.algorithms; }

    static constexpr std::size_t kMaxKeysTried = 4;

private:
    Result check_claims(const std::string& payload_json, std::int64_t now_seconds) const;

    Options options_;
    std::shared_ptr<EVP_PKEY> public_key_;  // asymmetric key_file algorithms
    bool key_sets_ = false;
};

// RFC 7515 §2 / RFC 4648 §5: the URL-safe alphabet without padding. Strict:
// "=" and any character outside the alphabet are refused, as are a length
// of 1 mod 4 and non-zero unused bits in the last character (so every byte
// string has exactly one accepted encoding).
std::optional<std::string> base64url_decode(std::string_view text);
std::string base64url_encode(std::string_view bytes);

// ---- Finding the token in a request -----------------------------------------
// (A token in a cookie is found with cookie::find, protocol/cookie.h.)

// The token of an "Authorization: Bearer <token>" field value (RFC 6750
// §2.1): the scheme is case-insensitive (RFC 9110 §11.1), followed by one
// or more spaces and a b64token (ALPHA / DIGIT / "-" "." "_" "~" "+" "/",
// then any "="). nullopt for any other scheme or shape.
std::optional<std::string_view> bearer_token(std::string_view authorization);

// The percent-decoded value of parameter <name> in the query component
// <query> (the part after "?", without it): "a=1&token=xyz". The first
// match; nullopt when absent or when its value has an invalid %-escape.
// "+" is kept as is (JWTs never contain it; base64url has no "+").
std::optional<std::string> query_value(std::string_view query, std::string_view name);

}  // namespace jwt
