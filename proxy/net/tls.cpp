#include "net/tls.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>

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

// Where a listener SSL_CTX finds its ServerContext (for the ticket and
// session cache callbacks, which carry no argument of their own).
int context_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

// Fetched once: the implicit fetch of EVP_aes_256_cbc() costs a lookup per call.
const EVP_CIPHER* ticket_cipher() {
    static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    return cipher;
}

std::int64_t now_s() { return static_cast<std::int64_t>(std::time(nullptr)); }

// A scratch context to ask OpenSSL whether it accepts a list.
struct ScratchCtx {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    ~ScratchCtx() { SSL_CTX_free(ctx); }
};

std::size_t count_ciphers(SSL_CTX* ctx, bool tls13) {
    std::size_t n = 0;
    STACK_OF(SSL_CIPHER)* ciphers = SSL_CTX_get_ciphers(ctx);
    for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i) {
        const bool is13 = std::strcmp(SSL_CIPHER_get_version(sk_SSL_CIPHER_value(ciphers, i)), "TLSv1.3") == 0;
        if (is13 == tls13) ++n;
    }
    return n;
}

std::vector<std::string> split_list(const std::string& list) {
    std::vector<std::string> out;
    std::string current;
    for (char c : list) {
        if (c == ':' || c == ',' || c == ' ') {
            if (!current.empty()) out.push_back(std::move(current));
            current.clear();
        } else {
            current.push_back(c);
        }
    }
    if (!current.empty()) out.push_back(std::move(current));
    return out;
}

SSL_CTX* new_server_ctx(const CertificatePair& pair, const ServerSettings& settings, std::string& error) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        error = "cannot create TLS context: " + openssl_reason();
        return nullptr;
    }
    SSL_CTX_set_min_proto_version(ctx, settings.min_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
    SSL_CTX_set_timeout(ctx, static_cast<long>(settings.session_timeout.count()));
    if (settings.session_cache == 0) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_sess_set_cache_size(ctx, static_cast<long>(settings.session_cache));
    }
    SSL_CTX_set_alpn_select_cb(ctx, &select_alpn, settings.http2 ? &http2_marker : nullptr);
    if (SSL_CTX_set_cipher_list(ctx, settings.ciphers.c_str()) != 1) {
        error = "ciphers: " + openssl_reason();
    } else if (SSL_CTX_set_ciphersuites(ctx, settings.ciphersuites.c_str()) != 1) {
        error = "ciphersuites: " + openssl_reason();
    } else if (SSL_CTX_set1_groups_list(ctx, settings.groups.c_str()) != 1) {
        error = "groups: " + openssl_reason();
    } else if (SSL_CTX_use_certificate_chain_file(ctx, pair.cert.c_str()) != 1) {
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

std::string check_ciphers(const std::string& list) {
    ScratchCtx scratch;
    if (SSL_CTX_set_cipher_list(scratch.ctx, list.c_str()) != 1) {
        ERR_clear_error();
        return "OpenSSL selects no TLS 1.2 cipher from " + list;
    }
    // OpenSSL skips words it does not know; a typo must not silently drop a
    // cipher, so every plain word (not "!X", "-X", "+X", "@STRENGTH") must
    // select something on its own.
    for (const std::string& word : split_list(list)) {
        if (word[0] == '!' || word[0] == '-' || word[0] == '+' || word[0] == '@') continue;
        if (SSL_CTX_set_cipher_list(scratch.ctx, word.c_str()) != 1 || count_ciphers(scratch.ctx, false) == 0) {
            ERR_clear_error();
            return "unknown cipher \"" + word + "\"";
        }
    }
    return "";
}

std::string check_ciphersuites(const std::string& list) {
    ScratchCtx scratch;
    for (const std::string& word : split_list(list)) {
        if (SSL_CTX_set_ciphersuites(scratch.ctx, word.c_str()) != 1 || count_ciphers(scratch.ctx, true) == 0) {
            ERR_clear_error();
            return "unknown TLS 1.3 cipher suite \"" + word + "\"";
        }
    }
    if (SSL_CTX_set_ciphersuites(scratch.ctx, list.c_str()) != 1) {
        ERR_clear_error();
        return "OpenSSL refuses " + list;
    }
    return "";
}

std::string check_groups(const std::string& list) {
    ScratchCtx scratch;
    for (const std::string& word : split_list(list)) {
        if (SSL_CTX_set1_groups_list(scratch.ctx, word.c_str()) != 1) {
            ERR_clear_error();
            return "unknown group \"" + word + "\"";
        }
    }
    if (list.empty() || SSL_CTX_set1_groups_list(scratch.ctx, list.c_str()) != 1) {
        ERR_clear_error();
        return "OpenSSL refuses the group list \"" + list + "\"";
    }
    return "";
}

std::variant<std::shared_ptr<const ServerContext>, std::string> ServerContext::create(const ServerSettings& settings) {
    std::shared_ptr<ServerContext> context(new ServerContext());
    context->settings_ = settings;
    context->tickets_ = settings.ticket_key
                            ? std::make_shared<TicketKeyRing>(*settings.ticket_key)
                            : std::make_shared<TicketKeyRing>(SessionStore::kRotateEvery, 1, now_s());
    std::string error;
    context->default_ = new_server_ctx(settings.main, settings, error);
    if (!context->default_) return error;
    for (const SniEntry& entry : settings.sni) {
        SSL_CTX* ctx = new_server_ctx(entry.pair, settings, error);
        if (!ctx) return error;
        context->sni_.emplace_back(entry.server_name, ctx);
    }
    // No remove callback: OpenSSL removes the session of every connection
    // freed without a close_notify sent (the RFC 2246 "bad session" rule),
    // which is how most WebSocket connections end; like nginx and HAProxy we
    // let sessions expire by session_timeout and capacity instead.
    // Every context of the listener answers the callbacks: the ticket key
    // callback and the session cache run on the default context (OpenSSL's
    // session_ctx) even after the servername callback switched certificates,
    // but which one OpenSSL asks is its business.
    auto install = [&](SSL_CTX* ctx) {
        SSL_CTX_set_ex_data(ctx, context_index(), context.get());
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &ServerContext::on_ticket_key);
        SSL_CTX_sess_set_new_cb(ctx, &ServerContext::on_new_session);
        SSL_CTX_sess_set_get_cb(ctx, &ServerContext::on_get_session);
    };
    install(context->default_);
    for (auto& [name, ctx] : context->sni_) install(ctx);
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

void ServerContext::share_sessions(SessionStore& store, const std::string& listener) const {
    tickets_ = settings_.ticket_key ? store.file_ring(listener, *settings_.ticket_key)
                                    : store.rotating_ring();
    tickets_->cover(settings_.session_timeout);
    if (settings_.session_cache == 0) return;
    cache_ = store.cache(listener, settings_.session_cache);
    // Only the shared cache: OpenSSL's internal one belongs to this
    // generation's SSL_CTX and would die with it at the next reload.
    auto external = [](SSL_CTX* ctx) { SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL); };
    external(default_);
    for (auto& [name, ctx] : sni_) external(ctx);
}

const ServerContext* ServerContext::from(SSL* ssl) {
    return static_cast<const ServerContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), context_index()));
}

// RFC 5077 §4's recommended ticket construction, as nginx does it:
// key name, IV, AES-256-CBC, HMAC-SHA256. Returns 1 (key set), 2 (key set,
// but issue a fresh ticket under the current key), 0 (unknown key: full
// handshake) or -1 (internal error).
int ServerContext::on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                                 EVP_MAC_CTX* mac, int encrypt) {
    const ServerContext* self = from(ssl);
    if (self == nullptr || ticket_cipher() == nullptr) return -1;
    TicketKey key;
    int result = 1;
    if (encrypt) {
        key = self->tickets_->encrypting(now_s());
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(ticket_cipher())) != 1) return -1;
        std::memcpy(name, key.name.data(), key.name.size());
        if (EVP_EncryptInit_ex(cipher, ticket_cipher(), nullptr, key.aes.data(), iv) != 1) result = -1;
    } else {
        switch (self->tickets_->decrypting(name, key)) {
            case TicketKeyRing::Match::None: return 0;
            case TicketKeyRing::Match::Previous: result = 2; break;
            case TicketKeyRing::Match::Current: break;
        }
        // TLS 1.3: always issue a fresh ticket on resumption (as nginx
        // does); OpenSSL sends none otherwise, and clients that treat
        // tickets as single-use (RFC 8446 §C.4) would fall back to a full
        // handshake on their next connect.
        if (SSL_version(ssl) == TLS1_3_VERSION) result = 2;
        if (EVP_DecryptInit_ex(cipher, ticket_cipher(), nullptr, key.aes.data(), iv) != 1) result = -1;
    }
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac.data(), key.hmac.size()),
                           OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (result > 0 && EVP_MAC_CTX_set_params(mac, params) != 1) result = -1;
    OPENSSL_cleanse(&key, sizeof key);
    return result;
}

int ServerContext::on_new_session(SSL* ssl, SSL_SESSION* session) {
    const ServerContext* self = from(ssl);
    if (self == nullptr || !self->cache_) return 0;
    unsigned int length = 0;
    const unsigned char* id = SSL_SESSION_get_id(session, &length);
    // A TLS 1.2 session sent as a ticket has no ID; a TLS 1.3 session with
    // stateless tickets has a dummy one: neither is ever looked up.
    if (length == 0) return 0;
    if (SSL_SESSION_get_protocol_version(session) == TLS1_3_VERSION && (SSL_get_options(ssl) & SSL_OP_NO_TICKET) == 0) {
        return 0;
    }
    const int size = i2d_SSL_SESSION(session, nullptr);
    if (size <= 0) return 0;
    std::string der(static_cast<std::size_t>(size), '\0');
    auto* out = reinterpret_cast<unsigned char*>(der.data());
    i2d_SSL_SESSION(session, &out);
    const std::int64_t expires = static_cast<std::int64_t>(SSL_SESSION_get_time(session)) + SSL_SESSION_get_timeout(session);
    self->cache_->put(std::string(reinterpret_cast<const char*>(id), length), std::move(der), expires);
    return 0;  // we keep a copy, not OpenSSL's reference
}

SSL_SESSION* ServerContext::on_get_session(SSL* ssl, const unsigned char* id, int length, int* copy) {
    *copy = 0;
    const ServerContext* self = from(ssl);
    if (self == nullptr || !self->cache_ || length <= 0) return nullptr;
    std::optional<std::string> der =
        self->cache_->get(std::string_view(reinterpret_cast<const char*>(id), static_cast<std::size_t>(length)), now_s());
    if (!der) return nullptr;
    const auto* in = reinterpret_cast<const unsigned char*>(der->data());
    return d2i_SSL_SESSION(nullptr, &in, static_cast<long>(der->size()));
}


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
