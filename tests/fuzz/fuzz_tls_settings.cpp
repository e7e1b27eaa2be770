// libFuzzer target for what [listener.tls] hands to OpenSSL or reads from a
// file: the ticket key parser (tls::parse_ticket_key) and the word-by-word
// checks of cipher, suite and group lists (tls::check_ciphers,
// check_ciphersuites, check_groups). The first byte picks the function, the
// rest is its input. A ticket key parses exactly when it is 80 bytes, into
// the name / HMAC / AES slices of nginx's layout; a list that a check
// accepts must also be accepted by OpenSSL as a whole.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <openssl/ssl.h>

#include "net/tls.h"
#include "net/tls_session.h"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
    switch (data[0] % 4) {
    case 0: {
        auto key = tls::parse_ticket_key(input);
        check(std::holds_alternative<tls::TicketKey>(key) == (input.size() == 80));
        if (const auto* k = std::get_if<tls::TicketKey>(&key)) {
            check(std::memcmp(k->name.data(), input.data(), 16) == 0);
            check(std::memcmp(k->hmac.data(), input.data() + 16, 32) == 0);
            check(std::memcmp(k->aes.data(), input.data() + 48, 32) == 0);
        }
        return 0;
    }
    case 1:
    case 2:
    case 3: {
        // OpenSSL's list parsers stop at NUL; so would a TOML string.
        if (input.find('\0') != std::string::npos || input.size() > 512) return 0;
        SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
        bool accepted = false;
        bool whole = false;
        if (data[0] % 4 == 1) {
            accepted = tls::check_ciphers(input).empty();
            whole = SSL_CTX_set_cipher_list(ctx, input.c_str()) == 1;
        } else if (data[0] % 4 == 2) {
            accepted = tls::check_ciphersuites(input).empty();
            whole = SSL_CTX_set_ciphersuites(ctx, input.c_str()) == 1;
        } else {
            accepted = tls::check_groups(input).empty();
            whole = SSL_CTX_set1_groups_list(ctx, input.c_str()) == 1;
        }
        SSL_CTX_free(ctx);
        check(!accepted || whole);
        return 0;
    }
    }
    return 0;
}
