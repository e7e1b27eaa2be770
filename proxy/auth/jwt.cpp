#include "auth/jwt.h"

#include "auth/jwks.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

#include <array>
#include <vector>

namespace jwt {

namespace {

constexpr std::size_t hs256_min_secret = 32;  // RFC 7518 §3.2
constexpr int rs256_min_bits = 2048;          // RFC 7518 §3.3

struct BioFree {
    void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
    void operator()(X509* x) const { X509_free(x); }
};
struct MdCtxFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::shared_ptr<EVP_PKEY> wrap(EVP_PKEY* key) {
    return std::shared_ptr<EVP_PKEY>(key, [](EVP_PKEY* k) { EVP_PKEY_free(k); });
}

// A PEM public key, or the key of a PEM certificate.
std::shared_ptr<EVP_PKEY> load_public_key(std::string_view pem) {
    std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return nullptr;
    if (EVP_PKEY* key = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr)) return wrap(key);
    ERR_clear_error();
    bio.reset(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return nullptr;
    std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    ERR_clear_error();
    if (!cert) return nullptr;
    EVP_PKEY* key = X509_get_pubkey(cert.get());
    ERR_clear_error();
    return key ? wrap(key) : nullptr;
}

// One DER INTEGER (X.690 §8.3) of the unsigned big-endian <magnitude>.
void append_der_integer(std::vector<std::uint8_t>& out, const std::uint8_t* magnitude, std::size_t n) {
    while (n > 1 && magnitude[0] == 0) {
        ++magnitude;
        --n;
    }
    bool pad = (magnitude[0] & 0x80) != 0;  // keep it positive
    out.push_back(0x02);
    out.push_back(static_cast<std::uint8_t>(n + (pad ? 1 : 0)));
    if (pad) out.push_back(0x00);
    out.insert(out.end(), magnitude, magnitude + n);
}

// RFC 7518 §3.4: a JWS ECDSA signature is R || S; OpenSSL verifies the
// DER ECDSA-Sig-Value SEQUENCE { r INTEGER, s INTEGER } (RFC 3279 §2.2.3).
std::vector<std::uint8_t> ecdsa_raw_to_der(std::string_view raw) {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(raw.data());
    const std::size_t half = raw.size() / 2;
    std::vector<std::uint8_t> body;
    append_der_integer(body, bytes, half);
    append_der_integer(body, bytes + half, half);
    std::vector<std::uint8_t> der{0x30, static_cast<std::uint8_t>(body.size())};  // < 128 bytes
    der.insert(der.end(), body.begin(), body.end());
    return der;
}

bool verify_hs256(std::string_view secret, std::string_view signed_part, std::string_view signature) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
    std::size_t mac_length = 0;
    if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
                  reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(),
                  mac.data(), mac.size(), &mac_length) == nullptr) {
        ERR_clear_error();
        return false;
    }
    // Constant time: the comparison must not tell an attacker how many
    // leading bytes of a forged MAC were right.
    return signature.size() == mac_length &&
           CRYPTO_memcmp(mac.data(), signature.data(), mac_length) == 0;
}

bool verify_digest(EVP_PKEY* key, const EVP_MD* md, bool pss, std::string_view signed_part,
                   const std::uint8_t* signature, std::size_t signature_length) {
    std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
    EVP_PKEY_CTX* pctx = nullptr;
    bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), &pctx, md, nullptr, key) == 1;
    // RFC 7518 §3.5: PSS with MGF1 over the same hash and a salt as long
    // as the hash output.
    if (ok && pss) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    }
    ok = ok && EVP_DigestVerify(ctx.get(), signature, signature_length,
                                reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size()) == 1;
    ERR_clear_error();
    return ok;
}

const EVP_MD* digest_of(Algorithm algorithm) {
    switch (algorithm) {
    case Algorithm::RS384:
    case Algorithm::ES384: return EVP_sha384();
    case Algorithm::RS512: return EVP_sha512();
    default: return EVP_sha256();
    }
}

// The signature of an asymmetric <algorithm> over <signed_part> by <key>.
// The key's type must already fit the algorithm (jwks::fits, or
// Verifier::create's checks): OpenSSL would otherwise happily verify an
// RS256 signature with an RSA key given for PS256.
bool verify_signature(Algorithm algorithm, EVP_PKEY* key, std::string_view signed_part, const std::string& signature) {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(signature.data());
    switch (algorithm) {
    case Algorithm::HS256: return false;
    case Algorithm::RS256:
    case Algorithm::RS384:
    case Algorithm::RS512:
    case Algorithm::PS256:
        return !signature.empty() && verify_digest(key, digest_of(algorithm), algorithm == Algorithm::PS256,
                                                   signed_part, bytes, signature.size());
    case Algorithm::ES256:
    case Algorithm::ES384: {
        // RFC 7518 §3.4: R || S, each as long as the curve's order (32 / 48 bytes).
        const std::size_t size = algorithm == Algorithm::ES256 ? 64 : 96;
        if (signature.size() != size) return false;
        auto der = ecdsa_raw_to_der(signature);
        return verify_digest(key, digest_of(algorithm), false, signed_part, der.data(), der.size());
    }
    }
    return false;
}

// The parts of a compact JWS every verification needs, before any key is
// chosen.
struct Decoded {
    Algorithm algorithm = Algorithm::HS256;
    std::optional<std::string> kid;
    std::string_view signed_part;
    std::string signature;
    std::string payload_json;
};

Result fail(std::string_view why) {
    Result r;
    r.error = why;
    return r;
}

int base64url_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

std::optional<std::string> percent_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size()) return std::nullopt;
        auto hex = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        };
        int hi = hex(s[i + 1]);
        int lo = hex(s[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
    }
    return out;
}

}  // namespace

std::optional<Algorithm> algorithm_from_string(std::string_view name) {
    for (Algorithm a : {Algorithm::HS256, Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256,
                        Algorithm::ES256, Algorithm::ES384}) {
        if (name == to_string(a)) return a;
    }
    return std::nullopt;
}

std::string_view to_string(Algorithm algorithm) {
    switch (algorithm) {
    case Algorithm::HS256: return "HS256";
    case Algorithm::RS256: return "RS256";
    case Algorithm::RS384: return "RS384";
    case Algorithm::RS512: return "RS512";
    case Algorithm::PS256: return "PS256";
    case Algorithm::ES256: return "ES256";
    case Algorithm::ES384: return "ES384";
    }
    return "?";
}

std::optional<double> Claims::expires_at() const {
    if (!payload_) return std::nullopt;
    auto it = payload_->find("exp");
    if (it == payload_->end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
}

std::optional<std::string> base64url_decode(std::string_view text) {
    if (text.size() % 4 == 1) return std::nullopt;
    std::string out;
    out.reserve(text.size() * 3 / 4);
    std::uint32_t buffer = 0;
    int bits = 0;
    for (char c : text) {
        int v = base64url_value(c);
        if (v < 0) return std::nullopt;
        buffer = (buffer << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((buffer >> bits) & 0xFF);
        }
    }
    // The 2 or 4 bits left over must be zero (RFC 4648 §3.5 canonical form).
    if ((buffer & ((1u << bits) - 1)) != 0) return std::nullopt;
    return out;
}

std::string base64url_encode(std::string_view bytes) {
    static constexpr char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    out.reserve((bytes.size() * 4 + 2) / 3);
    std::uint32_t buffer = 0;
    int bits = 0;
    for (char c : bytes) {
        buffer = (buffer << 8) | static_cast<unsigned char>(c);
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out += alphabet[(buffer >> bits) & 0x3F];
        }
    }
    if (bits > 0) out += alphabet[(buffer << (6 - bits)) & 0x3F];
    return out;
}

std::optional<std::string> Claims::claim(std::string_view name) const {
    if (!payload_) return std::nullopt;
    auto it = payload_->find(name);
    if (it == payload_->end() || it->is_null()) return std::nullopt;
    return json::text_of(*it);
}

std::optional<std::string> Claims::header_value(std::string_view name) const {
    auto text = claim(name);
    if (!text) return std::nullopt;
    for (char ch : *text) {
        auto c = static_cast<unsigned char>(ch);
        if ((c < 0x20 && c != '\t') || c == 0x7F) return std::nullopt;
    }
    return text;
}

std::variant<Verifier, std::string> Verifier::create(const Options& options) {
    Verifier v;
    v.options_ = options;
    const std::string name(to_string(options.algorithm));
    if (options.leeway_seconds < 0) return name + " verifier: leeway must not be negative";
    if (options.algorithm == Algorithm::HS256) {
        if (options.key.size() < hs256_min_secret)
            return name + " key: the secret must be at least 32 bytes (RFC 7518 section 3.2)";
        return v;
    }
    // The verifier needs only the public half; refuse a private key rather
    // than spread it to every route.
    if (options.key.find("PRIVATE KEY") != std::string::npos)
        return name + " key: a private key was given; give the public key or a certificate";
    v.public_key_ = load_public_key(options.key);
    if (!v.public_key_) return name + " key: no PEM public key or certificate found";
    v.options_.key.clear();
    EVP_PKEY* key = v.public_key_.get();
    if (options.algorithm != Algorithm::ES256 && options.algorithm != Algorithm::ES384) {
        if (!EVP_PKEY_is_a(key, "RSA")) return name + " key: not an RSA key";
        if (EVP_PKEY_get_bits(key) < rs256_min_bits)
            return name + " key: RSA keys must have at least 2048 bits (RFC 7518 section 3.3)";
        return v;
    }
    if (!EVP_PKEY_is_a(key, "EC")) return name + " key: not an EC key";
    const bool p256 = options.algorithm == Algorithm::ES256;
    char group[64] = {};
    std::size_t group_length = 0;
    if (EVP_PKEY_get_group_name(key, group, sizeof group, &group_length) != 1 ||
        std::string_view(group, group_length) != (p256 ? "prime256v1" : "secp384r1")) {
        ERR_clear_error();
        return name + " key: the EC key is not on curve " + (p256 ? "P-256" : "P-384");
    }
    return v;
}

std::variant<Verifier, std::string> Verifier::create_for_key_sets(const Options& options) {
    if (options.leeway_seconds < 0) return std::string("JWK Set verifier: leeway must not be negative");
    if (options.algorithms.empty()) return std::string("JWK Set verifier: no algorithm accepted");
    for (Algorithm a : options.algorithms) {
        if (a == Algorithm::HS256) return std::string("JWK Set verifier: HS256 is never used with a JWK Set");
    }
    Verifier v;
    v.options_ = options;
    v.options_.key.clear();
    v.key_sets_ = true;
    return v;
}

namespace {

// RFC 7515 §7.1: BASE64URL(header) '.' BASE64URL(payload) '.'
// BASE64URL(signature); a JSON object header without "crit" (§4.1.11: we
// understand no extension) whose "alg" we know. The kid, when present,
// must be a string.
std::variant<Decoded, std::string_view> decode(std::string_view token, std::size_t max_bytes) {
    if (token.size() > max_bytes) return reason::too_large;
    auto first = token.find('.');
    if (first == std::string_view::npos) return reason::malformed;
    auto second = token.find('.', first + 1);
    if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos)
        return reason::malformed;
    std::string_view header_part = token.substr(0, first);
    std::string_view payload_part = token.substr(first + 1, second - first - 1);
    std::string_view signature_part = token.substr(second + 1);
    if (header_part.empty() || payload_part.empty()) return reason::malformed;

    auto header_json = base64url_decode(header_part);
    auto payload_json = base64url_decode(payload_part);
    auto signature = base64url_decode(signature_part);
    if (!header_json || !payload_json || !signature) return reason::malformed;

    auto header = json::parse(*header_json, json::Limits{.max_bytes = max_bytes, .max_depth = 16});
    const json::Value* object = std::get_if<json::Value>(&header);
    if (object == nullptr || !object->is_object()) return reason::malformed;
    if (object->contains("crit")) return reason::unsupported_header;
    auto alg = object->find("alg");
    if (alg == object->end() || !alg->is_string()) return reason::malformed;
    auto algorithm = algorithm_from_string(alg->get_ref<const std::string&>());
    if (!algorithm) return reason::algorithm_mismatch;
    Decoded d;
    d.algorithm = *algorithm;
    if (auto kid = object->find("kid"); kid != object->end()) {
        if (!kid->is_string()) return reason::malformed;
        d.kid = kid->get<std::string>();
    }
    d.signed_part = token.substr(0, second);
    d.signature = std::move(*signature);
    d.payload_json = std::move(*payload_json);
    return d;
}

}  // namespace

Result Verifier::verify(std::string_view token, std::int64_t now_seconds) const {
    if (key_sets_) return verify(token, now_seconds, nullptr);
    auto decoded = decode(token, options_.max_token_bytes);
    if (auto* why = std::get_if<std::string_view>(&decoded)) return fail(*why);
    const Decoded& d = std::get<Decoded>(decoded);
    if (d.algorithm != options_.algorithm) return fail(reason::algorithm_mismatch);
    const bool signature_ok = options_.algorithm == Algorithm::HS256
                                  ? verify_hs256(options_.key, d.signed_part, d.signature)
                                  : verify_signature(options_.algorithm, public_key_.get(), d.signed_part, d.signature);
    if (!signature_ok) return fail(reason::bad_signature);
    return check_claims(d.payload_json, now_seconds);
}

Result Verifier::verify(std::string_view token, std::int64_t now_seconds, const jwks::KeySet* keys) const {
    if (!key_sets_) return verify(token, now_seconds);
    auto decoded = decode(token, options_.max_token_bytes);
    if (auto* why = std::get_if<std::string_view>(&decoded)) return fail(*why);
    const Decoded& d = std::get<Decoded>(decoded);
    bool accepted = false;
    for (Algorithm a : options_.algorithms) accepted = accepted || a == d.algorithm;
    if (!accepted) return fail(reason::algorithm_mismatch);
    if (keys == nullptr) return fail(reason::keys_unavailable);
    const auto candidates = jwks::candidates(*keys, d.algorithm, d.kid, kMaxKeysTried);
    if (candidates.empty()) {
        Result r = fail(reason::unknown_key);
        r.unknown_key_id = true;
        return r;
    }
    bool signature_ok = false;
    for (const jwks::Key* key : candidates) {
        if (verify_signature(d.algorithm, key->public_key.get(), d.signed_part, d.signature)) {
            signature_ok = true;
            break;
        }
    }
    if (!signature_ok) return fail(reason::bad_signature);
    return check_claims(d.payload_json, now_seconds);
}

Result Verifier::check_claims(const std::string& payload_json, std::int64_t now_seconds) const {
    const json::Limits limits{.max_bytes = options_.max_token_bytes, .max_depth = 16};
    auto payload = json::parse(payload_json, limits);
    json::Value* claims = std::get_if<json::Value>(&payload);
    if (claims == nullptr || !claims->is_object()) return fail(reason::malformed);

    // RFC 7519 §2 NumericDate: seconds since the epoch, maybe fractional.
    auto exp = claims->find("exp");
    auto nbf = claims->find("nbf");
    const bool has_exp = exp != claims->end();
    const bool has_nbf = nbf != claims->end();
    if ((has_exp && !exp->is_number()) || (has_nbf && !nbf->is_number())) return fail(reason::malformed);
    const double now = static_cast<double>(now_seconds);
    const double leeway = static_cast<double>(options_.leeway_seconds);
    if (has_exp && !(now < exp->get<double>() + leeway)) return fail(reason::expired);
    if (has_nbf && now + leeway < nbf->get<double>()) return fail(reason::not_yet_valid);

    if (options_.issuer) {
        auto iss = claims->find("iss");
        if (iss == claims->end() || !iss->is_string() || iss->get_ref<const std::string&>() != *options_.issuer)
            return fail(reason::wrong_issuer);
    }

    auto aud = claims->find("aud");
    if (options_.audience || aud != claims->end()) {
        bool match = false;
        if (aud != claims->end() && options_.audience) {
            if (aud->is_string()) {
                match = aud->get_ref<const std::string&>() == *options_.audience;
            } else if (aud->is_array()) {
                for (const auto& item : *aud)
                    match = match || (item.is_string() && item.get_ref<const std::string&>() == *options_.audience);
            }
        }
        if (!match) return fail(reason::wrong_audience);
    }

    Result r;
    r.ok = true;
    r.claims = Claims(std::make_shared<const json::Value>(std::move(*claims)));
    return r;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
    std::string_view value = trim(authorization);
    constexpr std::string_view scheme = "bearer";
    if (value.size() <= scheme.size()) return std::nullopt;
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        char c = value[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != scheme[i]) return std::nullopt;
    }
    value.remove_prefix(scheme.size());
    if (value.front() != ' ') return std::nullopt;
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    std::size_t i = 0;
    auto token_char = [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
    };
    while (i < value.size() && token_char(value[i])) ++i;
    if (i == 0) return std::nullopt;
    while (i < value.size() && value[i] == '=') ++i;
    if (i != value.size()) return std::nullopt;
    return value;
}

std::optional<std::string> query_value(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        auto equals = pair.find('=');
        std::string_view key = pair.substr(0, equals);
        auto decoded_key = percent_decode(key);
        if (!decoded_key || *decoded_key != name) continue;
        if (equals == std::string_view::npos) return std::string();
        return percent_decode(pair.substr(equals + 1));
    }
    return std::nullopt;
}

}  // namespace jwt
