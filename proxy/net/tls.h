// TLS contexts built once per configuration generation (OpenSSL 3). A new
// generation builds new contexts from the files, so a reload swaps
// certificates for new handshakes while established sessions keep theirs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <openssl/ssl.h>

namespace tls {

struct CertificatePair {
    std::string cert;  // PEM file, leaf first, chain allowed
    std::string key;   // PEM private key
};

struct SniEntry {
    std::string server_name;  // "chat.example.com" or "*.example.com"
    CertificatePair pair;
};

struct ServerSettings {
    CertificatePair main;        // default certificate (no SNI, or no match)
    std::vector<SniEntry> sni;
    int min_version = TLS1_2_VERSION;
    bool http2 = false;  // ALPN offers "h2" before "http/1.1"
};

// True when <name> (an SNI host name) matches <pattern>: equal ignoring case,
// or <pattern> "*.suffix" and <name> is exactly one label followed by
// ".suffix" (RFC 6125 §6.4.3: the wildcard covers one label only).
bool server_name_matches(std::string_view pattern, std::string_view name);

// Listener side: a default SSL_CTX plus one per SNI entry, chosen in the
// servername callback. Modern defaults: TLS 1.2+, OpenSSL's default secure
// cipher lists, ALPN "h2" (when settings.http2) then "http/1.1", session cache and tickets on,
// SSL_MODE_RELEASE_BUFFERS so that idle TLS sessions hold no record buffers.
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

private:
    ServerContext() = default;
    static int on_servername(SSL* ssl, int* alert, void* self);

    SSL_CTX* default_ = nullptr;
    std::vector<std::pair<std::string, SSL_CTX*>> sni_;
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
