// TLS contexts built once per configuration generation (OpenSSL 3). A new
// generation builds new contexts from the files, so a reload swaps
// certificates for new handshakes while established sessions keep theirs.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <openssl/ssl.h>

#include "net/tls_session.h"

namespace tls {

struct CertificatePair {
    std::string cert;  // PEM file, leaf first, chain allowed
    std::string key;   // PEM private key
};

struct SniEntry {
    std::string server_name;  // "chat.example.com" or "*.example.com"
    CertificatePair pair;
};

// Mozilla's "intermediate" profile (v5.7) without its DHE suites: TLS 1.2
// with ECDHE key exchange and AEAD ciphers only; all of TLS 1.3.
inline constexpr const char* kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
inline constexpr const char* kDefaultCiphersuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
inline constexpr const char* kDefaultGroups = "X25519:prime256v1:secp384r1";

struct ServerSettings {
    CertificatePair main;        // default certificate (no SNI, or no match)
    std::vector<SniEntry> sni;
    int min_version = TLS1_2_VERSION;
    std::string ciphers = kDefaultCiphers;            // TLS 1.2 cipher list (OpenSSL syntax)
    std::string ciphersuites = kDefaultCiphersuites;  // TLS 1.3 suites
    std::string groups = kDefaultGroups;              // key exchange groups
    std::optional<TicketKey> ticket_key{};  // from ticket_key_file; unset = generated, rotating keys
    std::string ticket_key_file{};        // its path, as written
    std::size_t session_cache = 20000;    // sessions kept by ID; 0 = no ID resumption
    std::chrono::seconds session_timeout{300};
    bool http2 = false;  // ALPN offers "h2" before "http/1.1"
};

// "" when OpenSSL accepts <list> as a TLS 1.2 cipher list (ciphers), TLS 1.3
// suites (ciphersuites) or groups and it selects at least one; else the
// reason, for a config error at the key.
std::string check_ciphers(const std::string& list);
std::string check_ciphersuites(const std::string& list);
std::string check_groups(const std::string& list);

// True when <name> (an SNI host name) matches <pattern>: equal ignoring case,
// or <pattern> "*.suffix" and <name> is exactly one label followed by
// ".suffix" (RFC 6125 §6.4.3: the wildcard covers one label only).
bool server_name_matches(std::string_view pattern, std::string_view name);

// Listener side: a default SSL_CTX plus one per SNI entry, chosen in the
// servername callback. Defaults: TLS 1.2+, the intermediate profile above,
// ALPN "h2" (when settings.http2) then "http/1.1", SSL_MODE_RELEASE_BUFFERS
// so that idle TLS sessions hold no record buffers, and resumption by
// tickets (our key ring, nginx's ticket format) and by session ID.
class ServerContext {
public:
    // Loads and checks every pair (the key must match its certificate).
    // The error names the file and OpenSSL's reason.
    static std::variant<std::shared_ptr<const ServerContext>, std::string> create(const ServerSettings& settings);
    ~ServerContext();
    ServerContext(const ServerContext&) = delete;
    ServerContext& operator=(const ServerContext&) = delete;

    // A fresh SSL for an accepted connection.
    SSL* new_ssl() const;

    // Resumes from <store>'s state instead of this context's own: its
    // rotating ring (or, with ticket_key_file, the key ring of <listener>,
    // the listen address) and the session cache of <listener>. Call once, before the context serves a
    // handshake (the Server does it before it publishes a generation); until
    // then tickets use a ring private to this context and IDs an internal
    // cache, which is all a unit test or `--check` needs.
    void share_sessions(SessionStore& store, const std::string& listener) const;

    const TicketKeyRing& tickets() const { return *tickets_; }

private:
    ServerContext() = default;
    static int on_servername(SSL* ssl, int* alert, void* self);
    static int on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                             EVP_MAC_CTX* mac, int encrypt);
    static int on_new_session(SSL* ssl, SSL_SESSION* session);
    static SSL_SESSION* on_get_session(SSL* ssl, const unsigned char* id, int length, int* copy);
    static const ServerContext* from(SSL* ssl);

    SSL_CTX* default_ = nullptr;
    std::vector<std::pair<std::string, SSL_CTX*>> sni_;
    ServerSettings settings_;
    // Written by share_sessions() before any handshake, read-only after.
    mutable std::shared_ptr<TicketKeyRing> tickets_;
    mutable std::shared_ptr<SessionCache> cache_;  // null: OpenSSL's internal cache
};

struct ClientSettings {
    std::string ca;           // PEM bundle; "" = the system's default trust store
    bool verify = true;
    std::string server_name;  // SNI and the name to verify; "" = the back end's IP address
};

// Back-end side, shared by every TLS back end of a pool.
class ClientContext {
public:
    static std::variant<std::shared_ptr<const ClientContext>, std::string> create(const ClientSettings& settings);
    ~ClientContext();
    ClientContext(const ClientContext&) = delete;
    ClientContext& operator=(const ClientContext&) = delete;

    // A fresh SSL for a connection to a back end at <ip>: SNI and hostname
    // verification use settings.server_name, or the IP when that is empty.
    SSL* new_ssl(std::string_view ip) const;

private:
    ClientContext() = default;
    SSL_CTX* ctx_ = nullptr;
    ClientSettings settings_;
};

// OpenSSL's reason for the last failure on this thread's error queue (or
// the verify result of <ssl>), for log lines: "certificate verify failed:
// self-signed certificate".
std::string last_error(const SSL* ssl = nullptr);

}  // namespace tls
