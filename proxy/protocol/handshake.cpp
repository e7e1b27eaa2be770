// RFC 6455 §4 opening handshake: request validation (§4.2.1), the accept key
// (§4.2.2) and the client-side check of a back end's answer (§4.1).
#include <openssl/evp.h>

#include "protocol/websocket.h"

namespace ws {

namespace {

constexpr std::string_view kAcceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

// §4.2.1 item 5: the key is the base64 (RFC 4648 §4) of 16 bytes, which is
// always 22 alphabet characters and "==". The unused low bits of the last
// character are not required to be zero (RFC 4648 §3.5 leaves that to the
// decoder); the back end sees the key exactly as sent either way.
bool valid_key(std::string_view key) {
    if (key.size() != 24 || key[22] != '=' || key[23] != '=') return false;
    for (std::size_t i = 0; i < 22; ++i) {
        if (!is_base64_char(key[i])) return false;
    }
    return true;
}

std::size_t count_headers(const http1::HeaderBlock& block, std::string_view name) {
    std::size_t n = 0;
    for (const http1::Header& h : block.headers) {
        if (http1::iequals(h.name, name)) ++n;
    }
    return n;
}

UpgradeCheck reject(int status, std::string_view reason) {
    UpgradeCheck c;
    c.is_upgrade = true;
    c.http_status = status;
    c.reason = reason;
    return c;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// §9.1: Sec-WebSocket-Extensions is a comma list of extensions, each a name
// optionally followed by ";"-separated parameters; the header may repeat.
bool lists_extension(const http1::HeaderBlock& block, std::string_view extension) {
    for (const http1::Header& h : block.headers) {
        if (!http1::iequals(h.name, "Sec-WebSocket-Extensions")) continue;
        std::string_view rest = h.value;
        while (!rest.empty()) {
            const std::size_t comma = rest.find(',');
            const std::string_view item = rest.substr(0, comma);
            if (http1::iequals(trim(item.substr(0, item.find(';'))), extension)) return true;
            if (comma == std::string_view::npos) break;
            rest.remove_prefix(comma + 1);
        }
    }
    return false;
}

}  // namespace

UpgradeCheck check_upgrade_request(const http1::RequestHead& request) {
    if (!request.has_token("Upgrade", "websocket")) {
        UpgradeCheck c;
        c.http_status = 426;
        c.reason = "not a websocket upgrade";
        return c;
    }
    if (request.method != "GET") return reject(405, "method not GET");
    if (request.version_minor != 1) return reject(400, "not HTTP/1.1");
    if (request.find("Host") == nullptr) return reject(400, "missing Host");
    if (!request.has_token("Connection", "upgrade")) {
        return reject(400, "Connection lacks upgrade");
    }
    const http1::Header* version = request.find("Sec-WebSocket-Version");
    if (version == nullptr || version->value != "13") {
        UpgradeCheck c = reject(426, "unsupported Sec-WebSocket-Version");
        c.needs_version_header = true;
        return c;
    }
    const http1::Header* key = request.find("Sec-WebSocket-Key");
    if (key == nullptr) return reject(400, "missing Sec-WebSocket-Key");
    if (count_headers(request, "Sec-WebSocket-Key") > 1) {
        return reject(400, "duplicate Sec-WebSocket-Key");
    }
    if (!valid_key(key->value)) return reject(400, "invalid Sec-WebSocket-Key");

    UpgradeCheck c;
    c.is_upgrade = true;
    c.ok = true;
    c.key = key->value;
    return c;
}

std::string compute_accept(std::string_view key) {
    std::string input;
    input.reserve(key.size() + kAcceptGuid.size());
    input.append(key);
    input.append(kAcceptGuid);

    // EVP_sha1() would look the algorithm up in the provider tables on
    // every call (OpenSSL 3's implicit fetch, about 1 % of a proxied
    // handshake): it is fetched once. The object is immutable and safe to
    // share between threads.
    static EVP_MD* const sha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (!sha1 || EVP_Digest(input.data(), input.size(), digest, &digest_len, sha1, nullptr) != 1) {
        return {};
    }
    // EVP_EncodeBlock writes 4 * ceil(n / 3) characters plus a NUL.
    unsigned char encoded[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    const int n = EVP_EncodeBlock(encoded, digest, static_cast<int>(digest_len));
    return std::string(reinterpret_cast<const char*>(encoded), static_cast<std::size_t>(n));
}

ResponseCheck check_upgrade_response(const http1::ResponseHead& response,
                                     std::string_view client_key) {
    ResponseCheck c;
    if (response.status != 101) {
        c.reason = "status not 101";
        return c;
    }
    if (!response.has_token("Upgrade", "websocket")) {
        c.reason = "Upgrade lacks websocket";
        return c;
    }
    if (!response.has_token("Connection", "upgrade")) {
        c.reason = "Connection lacks upgrade";
        return c;
    }
    const http1::Header* accept = response.find("Sec-WebSocket-Accept");
    if (accept == nullptr) {
        c.reason = "missing Sec-WebSocket-Accept";
        return c;
    }
    if (accept->value != compute_accept(client_key)) {
        c.reason = "Sec-WebSocket-Accept mismatch";
        return c;
    }
    c.ok = true;
    c.deflate_negotiated = lists_extension(response, "permessage-deflate");
    return c;
}

}  // namespace ws
