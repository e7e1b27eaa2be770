// libFuzzer target for the JWK Set parser (auth/jwks) and key selection.
// The input is a JWK Set document; whatever parses must hold only keys with
// a public key, skipped reasons for the rest, and key selection over it must
// return fitting keys within the bound. A fixed token is then verified
// against the set (it must never verify: it is signed by no key). The URL
// splitter gets the same bytes. Any crash, sanitizer report or broken
// invariant (trap) is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "auth/jwks.h"
#include "auth/jwt.h"

namespace {

const jwt::Verifier& verifier() {
    static const jwt::Verifier v = [] {
        jwt::Options o;
        o.algorithms = {jwt::Algorithm::RS256, jwt::Algorithm::PS256, jwt::Algorithm::ES256, jwt::Algorithm::ES384};
        return std::get<jwt::Verifier>(jwt::Verifier::create_for_key_sets(o));
    }();
    return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = jwks::parse(text, jwks::Limits{.max_bytes = 65536, .max_keys = 16});
    if (auto* set = std::get_if<jwks::KeySet>(&parsed)) {
        if (set->keys.empty() || set->keys.size() > 16) __builtin_trap();
        for (const jwks::Key& key : set->keys) {
            if (!key.public_key) __builtin_trap();
        }
        for (jwt::Algorithm a : {jwt::Algorithm::RS256, jwt::Algorithm::ES256, jwt::Algorithm::ES384}) {
            for (const auto& kid : {std::optional<std::string>(), std::optional<std::string>("k1")}) {
                auto found = jwks::candidates(*set, a, kid, 4);
                if (found.size() > 4) __builtin_trap();
                for (const jwks::Key* key : found) {
                    if (!jwks::fits(*key, a) || (kid && key->kid != *kid)) __builtin_trap();
                }
            }
        }
        // {"alg":"RS256","kid":"k1"}.{"sub":"x"}.<64 bytes of 'A'>
        static const std::string token =
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0." + std::string(64, 'A');
        if (verifier().verify(token, 1700000000, set).ok) __builtin_trap();
    }
    if (auto url = jwks::parse_https_url(text)) {
        if (url->host.empty() || url->port == 0 || url->path_and_query.empty() || url->path_and_query[0] != '/')
            __builtin_trap();
    }
    return 0;
}
