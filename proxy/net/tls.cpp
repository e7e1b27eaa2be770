#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstring>

namespace tls {

namespace {

constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
// HTTP/2 first (our preference, RFC 7301 §3.2), then HTTP/1.1.
constexpr unsigned char kAlpnH2Http11[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kSessionContext[] = "wsgate";

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequal(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

std::string openssl_reason() {
    unsigned long code = ERR_get_error();
    ERR_clear_error();
    if (code == 0) return "unknown error";
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    // "error:0A000086:SSL routines::certificate verify failed" -> the reason.
    std::string_view text(buffer);
    std::size_t colon = text.rfind(':');
    return std::string(colon == std::string_view::npos ? text : text.substr(colon + 1));
}

int select_alpn(SSL*, const unsigned char** out, unsigned char* out_length, const unsigned char* in,
                unsigned int in_length, void* http2) {
    // HTTP/1.1, and h2 before it where the listener speaks HTTP/2: the
    // first of ours the client offers; otherwise carry on without ALPN
    // rather than fail the handshake.
    const bool h2 = http2 != nullptr;
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, out_length, h2 ? kAlpnH2Http11 : kAlpnHttp11,
                              h2 ? sizeof kAlpnH2Http11 : sizeof kAlpnHttp11, in, in_length) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

// The ALPN callback's argument on contexts of HTTP/2 listeners.
int http2_marker = 0;

SSL_CTX* new_server_ctx(const CertificatePair& pair, int min_version, bool http2, std::string& error) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        error = "cannot create TLS context: " + openssl_reason();
        return nullptr;
    }
    SSL_CTX_set_min_proto_version(ctx, min_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
    SSL_CTX_set_alpn_select_cb(ctx, &select_alpn, http2 ? &http2_marker : nullptr);
    if (SSL_CTX_use_certificate_chain_file(ctx, pair.cert.c_str()) != 1) {
        error = pair.cert + ": cannot load certificate: " + openssl_reason();
    } else if (SSL_CTX_use_PrivateKey_file(ctx, pair.key.c_str(), SSL_FILETYPE_PEM) != 1) {
        error = pair.key + ": cannot load private key: " + openssl_reason();
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        error = pair.key + ": private key does not match certificate " + pair.cert;
    } else {
        return ctx;
    }
    SSL_CTX_free(ctx);
    return nullptr;
}

}  // namespace

bool server_name_matches(std::string_view pattern, std::string_view name) {
    if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
        std::string_view suffix = pattern.substr(1);  // ".example.com"
        if (name.size() <= suffix.size()) return false;
        std::string_view label = name.substr(0, name.size() - suffix.size());
        return label.find('.') == std::string_view::npos && iequal(name.substr(label.size()), suffix);
    }
    return iequal(pattern, name);
}

std::variant<std::shared_ptr<const ServerContext>, std::string> ServerContext::create(const ServerSettings& settings) {
    std::shared_ptr<ServerContext> context(new ServerContext());
    std::string error;
    context->default_ = new_server_ctx(settings.main, settings.min_version, settings.http2, error);
    if (!context->default_) return error;
    for (const SniEntry& entry : settings.sni) {
        SSL_CTX* ctx = new_server_ctx(entry.pair, settings.min_version, settings.http2, error);
        if (!ctx) return error;
        context->sni_.emplace_back(entry.server_name, ctx);
    }
    if (!context->sni_.empty()) {
        SSL_CTX_set_tlsext_servername_callback(context->default_, &ServerContext::on_servername);
        SSL_CTX_set_tlsext_servername_arg(context->default_, context.get());
    }
    return std::shared_ptr<const ServerContext>(std::move(context));
}

ServerContext::~ServerContext() {
    if (default_) SSL_CTX_free(default_);
    for (auto& [name, ctx] : sni_) SSL_CTX_free(ctx);
}

int ServerContext::on_servername(SSL* ssl, int*, void* self) {
    const auto* context = static_cast<const ServerContext*>(self);
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) return SSL_TLSEXT_ERR_OK;
    // Exact names first, then wildcards, so "a.example.com" beats "*.example.com".
    for (bool wildcard : {false, true}) {
        for (const auto& [pattern, ctx] : context->sni_) {
            if ((pattern.rfind("*.", 0) == 0) != wildcard) continue;
            if (server_name_matches(pattern, name)) {
                SSL_set_SSL_CTX(ssl, ctx);
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

SSL* ServerContext::new_ssl() const { return SSL_new(default_); }

std::variant<std::shared_ptr<const ClientContext>, std::string> ClientContext::create(const ClientSettings& settings) {
    std::shared_ptr<ClientContext> context(new ClientContext());
    context->settings_ = settings;
    context->ctx_ = SSL_CTX_new(TLS_client_method());
    if (!context->ctx_) return "cannot create TLS context: " + openssl_reason();
    SSL_CTX_set_min_proto_version(context->ctx_, TLS1_2_VERSION);
    SSL_CTX_set_mode(context->ctx_, SSL_MODE_RELEASE_BUFFERS);
    if (settings.verify) {
        SSL_CTX_set_verify(context->ctx_, SSL_VERIFY_PEER, nullptr);
        int loaded = settings.ca.empty() ? SSL_CTX_set_default_verify_paths(context->ctx_)
                                         : SSL_CTX_load_verify_locations(context->ctx_, settings.ca.c_str(), nullptr);
        if (loaded != 1) return settings.ca + ": cannot load CA certificates: " + openssl_reason();
    } else {
        SSL_CTX_set_verify(context->ctx_, SSL_VERIFY_NONE, nullptr);
    }
    return std::shared_ptr<const ClientContext>(std::move(context));
}

ClientContext::~ClientContext() {
    if (ctx_) SSL_CTX_free(ctx_);
}

SSL* ClientContext::new_ssl(std::string_view ip) const {
    SSL* ssl = SSL_new(ctx_);
    if (!ssl) return nullptr;
    std::string name = settings_.server_name.empty() ? std::string(ip) : settings_.server_name;
    if (!settings_.server_name.empty()) SSL_set_tlsext_host_name(ssl, name.c_str());
    if (settings_.verify) {
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
        if (settings_.server_name.empty()) {
            X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
        } else {
            X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0);
        }
    }
    return ssl;
}

std::string last_error(const SSL* ssl) {
    if (ssl) {
        long result = SSL_get_verify_result(ssl);
        if (result != X509_V_OK) {
            ERR_clear_error();
            return std::string("certificate verify failed: ") + X509_verify_cert_error_string(result);
        }
    }
    return openssl_reason();
}

}  // namespace tls
