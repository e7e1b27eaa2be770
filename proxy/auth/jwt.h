// Verification of JSON Web Tokens (RFC 7519) in the JWS compact
// serialisation (RFC 7515 §7.1) at the edge, before a WebSocket upgrade is
// forwarded: one configured algorithm and key per route, standard time,
// issuer and audience checks, and the claims for forwarding. Pure apart from
// OpenSSL 3 EVP: no sockets, no clocks (the caller passes the time), no
// globals. Also the pure helpers that find the token in a request.
//
// Supported algorithms (RFC 7518 §3.1): HS256 (HMAC SHA-256, shared
// secret), RS256 (RSASSA-PKCS1-v1_5 SHA-256) and ES256 (ECDSA P-256
// SHA-256). A token's "alg" header must name exactly the configured
// algorithm: "none" and every other value are refused, which closes the
// classic algorithm-confusion attacks (RFC 8725 §2.1, §3.1).
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "auth/json.h"

namespace jwt {

enum class Algorithm { HS256, RS256, ES256 };

// "HS256", "RS256", "ES256" (case-sensitive, as in the "alg" header).
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

private:
    std::shared_ptr<const json::Value> payload_;
};

struct Result {
    bool ok = false;
    std::string_view error;  // when !ok: one of jwt::reason
    Claims claims;           // when ok
};

// Built once per configuration generation; verify() is const and safe to
// call from several threads at once (OpenSSL 3 EVP_PKEY objects may be
// shared read-only).
class Verifier {
public:
    // Loads and checks the key. The error is a sentence for the config
    // layer: "RS256 key: no PEM public key or certificate found", ...
    static std::variant<Verifier, std::string> create(const Options& options);

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

    Algorithm algorithm() const { return options_.algorithm; }

private:
    Options options_;
    std::shared_ptr<EVP_PKEY> public_key_;  // RS256, ES256
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
