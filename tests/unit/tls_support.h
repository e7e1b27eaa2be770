// Helpers shared by the TLS tests: throwaway self-signed certificates.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace tls_test {

// A self-signed certificate for <key>, valid for an hour, with subject
// CN=<common_name> (none when empty). The caller frees it.
inline X509* self_signed_certificate(EVP_PKEY* key, const std::string& common_name = "") {
    X509* cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    if (!common_name.empty()) {
        X509_NAME* subject = X509_get_subject_name(cert);
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
        X509_set_issuer_name(cert, subject);
    }
    X509_sign(cert, key, EVP_sha256());
    return cert;
}

// A throwaway self-signed P-256 certificate and key written to /tmp,
// removed again by the destructor.
struct SelfSigned {
    std::string cert;
    std::string key;
    SelfSigned(const std::string& name, const std::string& common_name) {
        cert = "/tmp/wsgate-test-" + std::to_string(getpid()) + "-" + name + ".crt";
        key = "/tmp/wsgate-test-" + std::to_string(getpid()) + "-" + name + ".key";
        EVP_PKEY* pkey = EVP_EC_gen("P-256");
        X509* x = self_signed_certificate(pkey, common_name);
        FILE* f = std::fopen(cert.c_str(), "w");
        PEM_write_X509(f, x);
        std::fclose(f);
        f = std::fopen(key.c_str(), "w");
        PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr);
        std::fclose(f);
        X509_free(x);
        EVP_PKEY_free(pkey);
    }
    ~SelfSigned() {
        std::remove(cert.c_str());
        std::remove(key.c_str());
    }
    SelfSigned(const SelfSigned&) = delete;
    SelfSigned& operator=(const SelfSigned&) = delete;
};

}  // namespace tls_test
