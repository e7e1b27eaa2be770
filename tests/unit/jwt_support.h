// Helpers shared by the JWT and JWK Set tests: test-side key generation and
// signing with OpenSSL directly (independent of the verifier under test),
// and JWK export of public keys.
#pragma once

#include <doctest/doctest.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <unistd.h>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>

#include "auth/jwt.h"

namespace jwt_test {

using jwt::Algorithm;
using KeyPtr = std::shared_ptr<EVP_PKEY>;

inline KeyPtr wrap(EVP_PKEY* key) {
    REQUIRE(key != nullptr);
    return KeyPtr(key, [](EVP_PKEY* k) { EVP_PKEY_free(k); });
}

inline KeyPtr rsa_key(std::size_t bits) { return wrap(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits)); }
inline KeyPtr ec_key(const char* curve) { return wrap(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve)); }

// Keys are generated once per test run: RSA generation is slow.
inline const KeyPtr& rsa_2048() {
    static KeyPtr key = rsa_key(2048);
    return key;
}
inline const KeyPtr& rsa_2048_other() {
    static KeyPtr key = rsa_key(2048);
    return key;
}
inline const KeyPtr& p256() {
    static KeyPtr key = ec_key("P-256");
    return key;
}
inline const KeyPtr& p256_other() {
    static KeyPtr key = ec_key("P-256");
    return key;
}
inline const KeyPtr& p384() {
    static KeyPtr key = ec_key("P-384");
    return key;
}
inline const KeyPtr& p384_other() {
    static KeyPtr key = ec_key("P-384");
    return key;
}

inline bool is_rsa(Algorithm a) {
    return a == Algorithm::RS256 || a == Algorithm::RS384 || a == Algorithm::RS512 || a == Algorithm::PS256;
}

// The test key of <algorithm> (<other>: a second key of the same kind).
inline const KeyPtr& key_for(Algorithm algorithm, bool other = false) {
    if (algorithm == Algorithm::ES256) return other ? p256_other() : p256();
    if (algorithm == Algorithm::ES384) return other ? p384_other() : p384();
    return other ? rsa_2048_other() : rsa_2048();
}

inline std::string bio_text(BIO* bio) {
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(n));
}

inline std::string public_pem(EVP_PKEY* key) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    REQUIRE(PEM_write_bio_PUBKEY(bio.get(), key) == 1);
    return bio_text(bio.get());
}

inline std::string private_pem(EVP_PKEY* key) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    REQUIRE(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
    return bio_text(bio.get());
}

// A self-signed certificate for <key>, as PEM.
inline std::string certificate_pem(EVP_PKEY* key) {
    std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
    REQUIRE(X509_set_version(cert.get(), 2) == 1);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("wsgate test"), -1,
                               -1, 0);
    X509_set_issuer_name(cert.get(), name);
    REQUIRE(X509_set_pubkey(cert.get(), key) == 1);
    REQUIRE(X509_sign(cert.get(), key, EVP_sha256()) > 0);
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    REQUIRE(PEM_write_bio_X509(bio.get(), cert.get()) == 1);
    return bio_text(bio.get());
}

inline const EVP_MD* md_for(Algorithm algorithm) {
    switch (algorithm) {
        case Algorithm::RS384:
        case Algorithm::ES384: return EVP_sha384();
        case Algorithm::RS512: return EVP_sha512();
        default: return EVP_sha256();
    }
}

inline std::string digest_sign(EVP_PKEY* key, std::string_view data, const EVP_MD* md = EVP_sha256(),
                               bool pss = false) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_PKEY_CTX* pctx = nullptr;
    REQUIRE(EVP_DigestSignInit(ctx.get(), &pctx, md, nullptr, key) == 1);
    if (pss) {
        REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
        REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1);
    }
    std::size_t length = 0;
    const auto* bytes = reinterpret_cast<const unsigned char*>(data.data());
    REQUIRE(EVP_DigestSign(ctx.get(), nullptr, &length, bytes, data.size()) == 1);
    std::string signature(length, '\0');
    REQUIRE(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length, bytes,
                           data.size()) == 1);
    signature.resize(length);
    return signature;
}

// DER ECDSA-Sig-Value to the JWS form R || S (RFC 7518 §3.4), <half> bytes each.
inline std::string der_to_raw(const std::string& der, int half = 32) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())),
                                                              ECDSA_SIG_free);
    REQUIRE(sig != nullptr);
    std::string raw(static_cast<std::size_t>(2 * half), '\0');
    auto* out = reinterpret_cast<unsigned char*>(raw.data());
    REQUIRE(BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), out, half) == half);
    REQUIRE(BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), out + half, half) == half);
    return raw;
}

inline std::string hmac_sha256(std::string_view secret, std::string_view data) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    std::size_t length = 0;
    REQUIRE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
                      reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, sizeof mac,
                      &length) != nullptr);
    return std::string(reinterpret_cast<char*>(mac), length);
}

inline const std::string hs_secret = "a shared secret of at least 32 bytes, for HS256 tests";
inline const std::string hs_other_secret = "another shared secret of at least thirty-two bytes";

// The JWS signature of <signing_input> by <key> for <algorithm>.
inline std::string signature_by(Algorithm algorithm, EVP_PKEY* key, std::string_view signing_input) {
    switch (algorithm) {
        case Algorithm::HS256: return "";
        case Algorithm::ES256: return der_to_raw(digest_sign(key, signing_input, md_for(algorithm)), 32);
        case Algorithm::ES384: return der_to_raw(digest_sign(key, signing_input, md_for(algorithm)), 48);
        default: return digest_sign(key, signing_input, md_for(algorithm), algorithm == Algorithm::PS256);
    }
}

// Signs <header_json>.<payload_json> with the key of <algorithm> (<other>:
// with a second key of the same kind, whose signature must not verify).
inline std::string sign(Algorithm algorithm, std::string_view header_json, std::string_view payload_json,
                        bool other = false) {
    std::string signing_input = jwt::base64url_encode(header_json) + "." + jwt::base64url_encode(payload_json);
    std::string signature = algorithm == Algorithm::HS256
                                ? hmac_sha256(other ? hs_other_secret : hs_secret, signing_input)
                                : signature_by(algorithm, key_for(algorithm, other).get(), signing_input);
    return signing_input + "." + jwt::base64url_encode(signature);
}

inline std::string header_for(Algorithm algorithm) {
    return "{\"alg\":\"" + std::string(jwt::to_string(algorithm)) + "\",\"typ\":\"JWT\"}";
}

inline std::string sign(Algorithm algorithm, std::string_view payload_json) {
    return sign(algorithm, header_for(algorithm), payload_json);
}

// ---- JWK export (RFC 7518 §6) -------------------------------------------------

inline std::string bn_param(EVP_PKEY* key, const char* name) {
    BIGNUM* bn = nullptr;
    REQUIRE(EVP_PKEY_get_bn_param(key, name, &bn) == 1);
    std::string bytes(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(bytes.data()));
    BN_free(bn);
    return jwt::base64url_encode(bytes);
}

// The public JWK of <key> as JSON members without braces ("kty":...), so
// that a test can add or break members.
inline std::string jwk_members(EVP_PKEY* key) {
    if (EVP_PKEY_is_a(key, "RSA")) {
        return "\"kty\":\"RSA\",\"n\":\"" + bn_param(key, OSSL_PKEY_PARAM_RSA_N) + "\",\"e\":\"" +
               bn_param(key, OSSL_PKEY_PARAM_RSA_E) + "\"";
    }
    unsigned char point[133];
    std::size_t length = 0;
    REQUIRE(EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &length) == 1);
    const std::size_t half = (length - 1) / 2;
    const std::string x(reinterpret_cast<char*>(point) + 1, half);
    const std::string y(reinterpret_cast<char*>(point) + 1 + half, half);
    return std::string("\"kty\":\"EC\",\"crv\":\"") + (half == 32 ? "P-256" : "P-384") + "\",\"x\":\"" +
           jwt::base64url_encode(x) + "\",\"y\":\"" + jwt::base64url_encode(y) + "\"";
}

// A file under /tmp holding <text>, removed with the object.
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

// A JWK Set of one key, <key>'s public members with <kid>.
inline std::string jwks_of(EVP_PKEY* key, const std::string& kid) {
    return "{\"keys\":[{" + jwt_test::jwk_members(key) + ",\"kid\":\"" + kid + "\"}]}";
}

}  // namespace jwt_test
