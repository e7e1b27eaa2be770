#include "auth/jwks.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <nlohmann/json.hpp>

#include <charconv>

#include "auth/json.h"

namespace jwks {

namespace {

constexpr int kMinRsaBits = 2048;      // RFC 7518 §3.3
constexpr int kMaxRsaBits = 16384;     // bounds the cost of one verification
constexpr std::size_t kMaxKidBytes = 256;

struct BnFree {
    void operator()(BIGNUM* b) const { BN_free(b); }
};
struct BldFree {
    void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
    void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct PkeyCtxFree {
    void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};

std::shared_ptr<EVP_PKEY> from_params(const char* type, OSSL_PARAM_BLD* bld) {
    std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
    EVP_PKEY* key = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
        EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1 || key == nullptr) {
        ERR_clear_error();
        return nullptr;
    }
    std::shared_ptr<EVP_PKEY> owned(key, [](EVP_PKEY* k) { EVP_PKEY_free(k); });
    // fromdata takes the numbers as given: the public check refuses an even
    // modulus, a bad exponent, a point off the curve or at infinity.
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> check(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
    const bool ok = check && EVP_PKEY_public_check(check.get()) == 1;
    ERR_clear_error();
    return ok ? owned : nullptr;
}

// A JWK member that must be a base64url string (RFC 7518 §6: Base64urlUInt
// and coordinates), decoded; nullopt with <problem> set otherwise.
std::optional<std::string> bytes_member(const json::Value& jwk, const char* name, std::string& problem) {
    auto it = jwk.find(name);
    if (it == jwk.end() || !it->is_string()) {
        problem = std::string("\"") + name + "\" is missing or not a string";
        return std::nullopt;
    }
    auto bytes = jwt::base64url_decode(it->get_ref<const std::string&>());
    if (!bytes || bytes->empty()) problem = std::string("\"") + name + "\" is not base64url";
    return bytes && !bytes->empty() ? bytes : std::nullopt;
}

std::shared_ptr<EVP_PKEY> rsa_key(const json::Value& jwk, std::string& problem) {
    auto n = bytes_member(jwk, "n", problem);
    if (!n) return nullptr;
    auto e = bytes_member(jwk, "e", problem);
    if (!e) return nullptr;
    if (e->size() > 8) {
        problem = "\"e\" is larger than 64 bits";
        return nullptr;
    }
    std::unique_ptr<BIGNUM, BnFree> bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                                                   static_cast<int>(n->size()), nullptr));
    std::unique_ptr<BIGNUM, BnFree> bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                                                   static_cast<int>(e->size()), nullptr));
    if (!bn_n || !bn_e) {
        problem = "out of memory";
        return nullptr;
    }
    const int bits = BN_num_bits(bn_n.get());
    if (bits < kMinRsaBits || bits > kMaxRsaBits) {
        problem = "RSA modulus of " + std::to_string(bits) + " bits (2048 to 16384 accepted, RFC 7518 section 3.3)";
        return nullptr;
    }
    std::unique_ptr<OSSL_PARAM_BLD, BldFree> bld(OSSL_PARAM_BLD_new());
    if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
        problem = "out of memory";
        return nullptr;
    }
    auto key = from_params("RSA", bld.get());
    if (!key) problem = "not a valid RSA public key";
    return key;
}

std::shared_ptr<EVP_PKEY> ec_key(const json::Value& jwk, KeyType& type, std::string& problem) {
    auto crv = jwk.find("crv");
    if (crv == jwk.end() || !crv->is_string()) {
        problem = "\"crv\" is missing or not a string";
        return nullptr;
    }
    const std::string& curve = crv->get_ref<const std::string&>();
    std::size_t size = 0;
    const char* group = nullptr;
    if (curve == "P-256") {
        type = KeyType::EcP256;
        size = 32;
        group = "prime256v1";
    } else if (curve == "P-384") {
        type = KeyType::EcP384;
        size = 48;
        group = "secp384r1";
    } else {
        problem = "curve \"" + curve + "\" is not supported (P-256, P-384)";
        return nullptr;
    }
    auto x = bytes_member(jwk, "x", problem);
    if (!x) return nullptr;
    auto y = bytes_member(jwk, "y", problem);
    if (!y) return nullptr;
    // RFC 7518 §6.2.1.2: the full coordinate length, leading zeros kept.
    if (x->size() != size || y->size() != size) {
        problem = "\"x\" and \"y\" must be " + std::to_string(size) + " bytes for " + curve;
        return nullptr;
    }
    std::string point = "\x04" + *x + *y;  // SEC 1 §2.3.3 uncompressed point
    std::unique_ptr<OSSL_PARAM_BLD, BldFree> bld(OSSL_PARAM_BLD_new());
    if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
        problem = "out of memory";
        return nullptr;
    }
    auto key = from_params("EC", bld.get());
    if (!key) problem = "not a point on " + curve;
    return key;
}

bool type_fits(KeyType type, jwt::Algorithm algorithm) {
    switch (algorithm) {
        case jwt::Algorithm::HS256: return false;
        case jwt::Algorithm::RS256:
        case jwt::Algorithm::RS384:
        case jwt::Algorithm::RS512:
        case jwt::Algorithm::PS256: return type == KeyType::Rsa;
        case jwt::Algorithm::ES256: return type == KeyType::EcP256;
        case jwt::Algorithm::ES384: return type == KeyType::EcP384;
    }
    return false;
}

// One JWK, or an empty optional with <problem> saying why it is skipped.
std::optional<Key> parse_key(const json::Value& jwk, std::string& problem) {
    if (!jwk.is_object()) {
        problem = "not a JSON object";
        return std::nullopt;
    }
    Key key;
    if (auto kid = jwk.find("kid"); kid != jwk.end()) {
        if (!kid->is_string() || kid->get_ref<const std::string&>().size() > kMaxKidBytes) {
            problem = "\"kid\" is not a string of at most 256 bytes";
            return std::nullopt;
        }
        key.kid = kid->get<std::string>();
    }
    auto kty = jwk.find("kty");
    if (kty == jwk.end() || !kty->is_string()) {
        problem = "\"kty\" is missing or not a string";
        return std::nullopt;
    }
    const std::string& type = kty->get_ref<const std::string&>();
    if (type != "RSA" && type != "EC") {
        problem = "key type \"" + type + "\" is not used (RSA and EC signature keys only)";
        return std::nullopt;
    }
    if (auto use = jwk.find("use"); use != jwk.end() && !(use->is_string() && *use == "sig")) {
        problem = "\"use\" is " + use->dump() + ", not \"sig\"";
        return std::nullopt;
    }
    if (auto ops = jwk.find("key_ops"); ops != jwk.end()) {
        bool verify = false;
        if (ops->is_array()) {
            for (const auto& op : *ops) verify = verify || (op.is_string() && op == "verify");
        }
        if (!verify) {
            problem = "\"key_ops\" does not include \"verify\"";
            return std::nullopt;
        }
    }
    if (jwk.contains("d")) {
        problem = "a private key (\"d\" present): publish only public keys";
        return std::nullopt;
    }
    if (auto alg = jwk.find("alg"); alg != jwk.end()) {
        std::optional<jwt::Algorithm> a;
        if (alg->is_string()) a = jwt::algorithm_from_string(alg->get_ref<const std::string&>());
        if (!a || *a == jwt::Algorithm::HS256) {
            problem = "algorithm " + alg->dump() + " is not supported";
            return std::nullopt;
        }
        key.alg = a;
    }
    key.public_key = type == "RSA" ? rsa_key(jwk, problem) : ec_key(jwk, key.type, problem);
    if (!key.public_key) return std::nullopt;
    if (key.alg && !type_fits(key.type, *key.alg)) {
        problem = "algorithm \"" + std::string(jwt::to_string(*key.alg)) + "\" does not fit a " + type + " key";
        return std::nullopt;
    }
    return key;
}

}  // namespace

std::variant<KeySet, std::string> parse(std::string_view text, const Limits& limits) {
    auto parsed = json::parse(text, json::Limits{.max_bytes = limits.max_bytes, .max_depth = 8});
    if (auto* error = std::get_if<json::ParseError>(&parsed)) return "not a JWK Set: " + error->reason;
    const json::Value& doc = std::get<json::Value>(parsed);
    if (!doc.is_object()) return std::string("not a JWK Set: the document is not a JSON object");
    auto keys = doc.find("keys");
    if (keys == doc.end() || !keys->is_array())
        return std::string("not a JWK Set: no \"keys\" array (RFC 7517 section 5)");
    if (keys->size() > limits.max_keys)
        return "the JWK Set has " + std::to_string(keys->size()) + " keys, more than " +
               std::to_string(limits.max_keys);
    KeySet set;
    std::size_t index = 0;
    for (const json::Value& jwk : *keys) {
        std::string problem;
        if (auto key = parse_key(jwk, problem)) {
            set.keys.push_back(std::move(*key));
        } else {
            std::string who = "key " + std::to_string(index);
            if (jwk.is_object()) {
                if (auto kid = jwk.find("kid"); kid != jwk.end() && kid->is_string() &&
                                                kid->get_ref<const std::string&>().size() <= kMaxKidBytes)
                    who += " (kid " + kid->dump() + ")";
            }
            set.skipped.push_back(who + ": " + problem);
        }
        ++index;
    }
    if (set.keys.empty()) {
        std::string why = "the JWK Set holds no usable signature key";
        if (!set.skipped.empty()) why += " (" + set.skipped.front() + ")";
        return why;
    }
    return set;
}

bool fits(const Key& key, jwt::Algorithm algorithm) {
    return type_fits(key.type, algorithm) && (!key.alg || *key.alg == algorithm);
}

std::vector<const Key*> candidates(const KeySet& set, jwt::Algorithm algorithm, const std::optional<std::string>& kid,
                                   std::size_t max) {
    std::vector<const Key*> out;
    for (const Key& key : set.keys) {
        if (out.size() >= max) break;
        if (kid && key.kid != *kid) continue;
        if (fits(key, algorithm)) out.push_back(&key);
    }
    return out;
}

std::optional<HttpsUrl> parse_https_url(std::string_view url) {
    constexpr std::string_view scheme = "https://";
    if (url.size() <= scheme.size()) return std::nullopt;
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        char c = url[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != scheme[i]) return std::nullopt;
    }
    std::string_view rest = url.substr(scheme.size());
    if (rest.find('#') != std::string_view::npos) return std::nullopt;
    for (char c : rest) {
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F) return std::nullopt;
    }
    const std::size_t slash = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, slash);
    HttpsUrl out;
    if (slash != std::string_view::npos) {
        out.path_and_query = std::string(rest.substr(slash));
        if (out.path_and_query.front() == '?') out.path_and_query.insert(0, "/");
    }
    if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
    std::string_view host = authority;
    std::string_view port;
    if (authority.front() == '[') {
        const std::size_t close = authority.find(']');
        if (close == std::string_view::npos || close == 1) return std::nullopt;
        host = authority.substr(1, close - 1);
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return std::nullopt;
            port = after.substr(1);
            if (port.empty()) return std::nullopt;
        }
    } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
        if (port.empty() || host.find(':') != std::string_view::npos) return std::nullopt;
    }
    if (host.empty()) return std::nullopt;
    if (!port.empty()) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) return std::nullopt;
        out.port = static_cast<std::uint16_t>(value);
    }
    out.host = std::string(host);
    return out;
}

}  // namespace jwks
