// Helpers shared by the TLS tests: throwaway self-signed certificates.
#pragma once

#include <string>

#include <openssl/evp.h>
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

}  // namespace tls_test
