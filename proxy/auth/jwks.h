// JSON Web Key Sets (RFC 7517 §5) of signature verification keys, as
// identity providers publish them (Keycloak's .../protocol/openid-connect/
// certs, Auth0's /.well-known/jwks.json): parsed with auth/json's limits and
// turned into OpenSSL 3 public keys from their JWK parameters (RFC 7518 §6:
// RSA "n"/"e", EC "crv"/"x"/"y") through EVP_PKEY_fromdata; no big-number
// code of our own. Pure: bytes in, an immutable KeySet out. A KeySet is
// shared read-only by every worker (OpenSSL 3 EVP_PKEYs may be).
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

#include "auth/jwt.h"

namespace jwks {

enum class KeyType { Rsa, EcP256, EcP384 };

struct Key {
    std::string kid;                      // "" when the JWK has none
    std::optional<jwt::Algorithm> alg;    // the JWK's "alg", when given: the only algorithm it serves
    KeyType type = KeyType::Rsa;
    std::shared_ptr<EVP_PKEY> public_key;
};

struct KeySet {
    std::vector<Key> keys;
    // One sentence per JWK left out, for the log: "key 2 (kid \"enc-1\"):
    // \"use\" is \"enc\", not \"sig\"". RFC 7517 §5: keys of an unknown
    // type (or for another use) are ignored, not fatal, so that one new
    // key type at the provider does not lock every user out.
    std::vector<std::string> skipped;
};

struct Limits {
    std::size_t max_bytes = 1 << 20;  // the document
    std::size_t max_keys = 64;        // JWKs in "keys" (more is an error)
};

// Parses a JWK Set document. An error (a sentence) when it is not JSON, not
// an object with a "keys" array, has more than max_keys entries or yields
// no usable key at all; individual unusable keys are skipped with a reason:
//  - "kty" other than "RSA" / "EC" (e.g. "oct": shared secrets are never
//    taken from a key set), an EC "crv" other than P-256 / P-384;
//  - "use" present and not "sig"; "key_ops" present without "verify";
//  - "alg" present and not one of RS256/384/512, PS256, ES256/384, or not
//    fitting the key's type (RS256 on an EC key);
//  - a private key ("d" present): an operator mistake we will not spread;
//  - bad parameters: not base64url, an RSA modulus under 2048 bits (RFC
//    7518 §3.3), EC coordinates of the wrong length or not on the curve.
std::variant<KeySet, std::string> parse(std::string_view text, const Limits& limits = {});

// Whether <key> may verify signatures of <algorithm>: RSA keys for
// RS256/384/512 and PS256, P-256 for ES256, P-384 for ES384, and the key's
// own "alg" (when it has one) must be <algorithm>.
bool fits(const Key& key, jwt::Algorithm algorithm);

// The keys to try for a token with <algorithm> and <kid>: with a kid, the
// keys with exactly that kid that fit; without, the first <max> keys that
// fit (RFC 7515 §4.1.4 makes kid optional; a provider with one key often
// omits it).
std::vector<const Key*> candidates(const KeySet& set, jwt::Algorithm algorithm,
                                   const std::optional<std::string>& kid, std::size_t max);

// jwks_url: an "https://host[:port]/path" URL, split for the fetcher.
// Anything else (http://, userinfo, a fragment, an empty host, a bad port)
// is nullopt: keys that sign identities are fetched over verified TLS only.
struct HttpsUrl {
    std::string host;         // a name or an IPv4 address, or an IPv6 address without brackets
    std::uint16_t port = 443;
    std::string path_and_query = "/";
};
std::optional<HttpsUrl> parse_https_url(std::string_view url);

}  // namespace jwks
