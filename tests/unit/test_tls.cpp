#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "net/tls.h"
#include "tls_support.h"

using tls_test::SelfSigned;

TEST_CASE("SNI patterns: exact names ignore case, a wildcard covers exactly one label") {
    CHECK(tls::server_name_matches("chat.example.com", "chat.example.com"));
    CHECK(tls::server_name_matches("chat.example.com", "CHAT.Example.com"));
    CHECK_FALSE(tls::server_name_matches("chat.example.com", "example.com"));
    CHECK(tls::server_name_matches("*.example.com", "a.example.com"));
    CHECK(tls::server_name_matches("*.example.com", "A.EXAMPLE.COM"));
    CHECK_FALSE(tls::server_name_matches("*.example.com", "a.b.example.com"));
    CHECK_FALSE(tls::server_name_matches("*.example.com", "example.com"));
    CHECK_FALSE(tls::server_name_matches("*.example.com", ".example.com"));
    CHECK_FALSE(tls::server_name_matches("*.example.com", "aexample.com"));
}

TEST_CASE("server contexts load matching pairs and refuse bad ones with the file named") {
    SelfSigned a("a", "a.test");
    SelfSigned b("b", "b.test");
    auto ok = tls::ServerContext::create({{a.cert, a.key}, {{"b.test", {b.cert, b.key}}}, TLS1_2_VERSION});
    REQUIRE(std::holds_alternative<std::shared_ptr<const tls::ServerContext>>(ok));
    SSL* ssl = std::get<std::shared_ptr<const tls::ServerContext>>(ok)->new_ssl();
    CHECK(ssl != nullptr);
    SSL_free(ssl);

    auto mismatched = tls::ServerContext::create({{a.cert, b.key}, {}, TLS1_2_VERSION});
    REQUIRE(std::holds_alternative<std::string>(mismatched));
    // OpenSSL notices the mismatch while loading the key ("key values
    // mismatch"); SSL_CTX_check_private_key is the second line of defence.
    const std::string& why = std::get<std::string>(mismatched);
    CAPTURE(why);
    CHECK(why.rfind(b.key + ": ", 0) == 0);
    CHECK((why.find("mismatch") != std::string::npos || why.find("does not match") != std::string::npos));

    auto missing = tls::ServerContext::create({{"/nonexistent.crt", a.key}, {}, TLS1_2_VERSION});
    REQUIRE(std::holds_alternative<std::string>(missing));
    CHECK(std::get<std::string>(missing).rfind("/nonexistent.crt: cannot load certificate", 0) == 0);

    auto bad_sni = tls::ServerContext::create({{a.cert, a.key}, {{"b.test", {b.cert, "/nonexistent.key"}}}, TLS1_2_VERSION});
    REQUIRE(std::holds_alternative<std::string>(bad_sni));
    CHECK(std::get<std::string>(bad_sni).rfind("/nonexistent.key: cannot load private key", 0) == 0);
}

TEST_CASE("client contexts: a CA file must load when verification is on") {
    SelfSigned ca("ca", "ca.test");
    auto ok = tls::ClientContext::create({ca.cert, true, "backend.test"});
    REQUIRE(std::holds_alternative<std::shared_ptr<const tls::ClientContext>>(ok));
    SSL* ssl = std::get<std::shared_ptr<const tls::ClientContext>>(ok)->new_ssl("127.0.0.1");
    REQUIRE(ssl != nullptr);
    CHECK(std::string(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) == "backend.test");
    SSL_free(ssl);
    auto bad = tls::ClientContext::create({"/nonexistent-ca.pem", true, ""});
    REQUIRE(std::holds_alternative<std::string>(bad));
    CHECK(std::get<std::string>(bad).rfind("/nonexistent-ca.pem: cannot load CA certificates", 0) == 0);
    auto unverified = tls::ClientContext::create({"/nonexistent-ca.pem", false, ""});
    CHECK(std::holds_alternative<std::shared_ptr<const tls::ClientContext>>(unverified));
}
