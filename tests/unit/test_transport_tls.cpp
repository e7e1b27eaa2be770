// The raw tunnel's TLS functions (runtime/transport_tls.h, transport_tls.cpp) over a real TLS 1.3
// session on a socket pair: what a TLS client's tunnel relies on once wsgate
// has taken its session over from the bufferevent.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <event2/bufferevent.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "runtime/transport_tls.h"
#include "tls_support.h"

namespace {

// A connected client (plain OpenSSL, its own socket BIO) and server (taken
// over with raw_tls::take_over), handshake done, both sockets non-blocking.
struct TlsPair {
    SSL_CTX* server_ctx = nullptr;
    SSL_CTX* client_ctx = nullptr;
    SSL* server = nullptr;
    SSL* client = nullptr;
    int server_fd = -1;
    int client_fd = -1;
    bool taken_over = false;
    bool handshake_done = false;

    TlsPair() {
        int fds[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
        server_fd = fds[0];
        client_fd = fds[1];
        EVP_PKEY* key = EVP_EC_gen("P-256");
        X509* cert = tls_test::self_signed_certificate(key);
        server_ctx = SSL_CTX_new(TLS_server_method());
        SSL_CTX_use_certificate(server_ctx, cert);
        SSL_CTX_use_PrivateKey(server_ctx, key);
        X509_free(cert);
        EVP_PKEY_free(key);
        client_ctx = SSL_CTX_new(TLS_client_method());
        server = SSL_new(server_ctx);
        client = SSL_new(client_ctx);
        taken_over = runtime::raw_tls::take_over(server, server_fd);
        SSL_set_accept_state(server);
        SSL_set_fd(client, client_fd);
        SSL_set_connect_state(client);
        bool server_done = false, client_done = false;
        for (int turn = 0; turn < 100 && !(server_done && client_done); ++turn) {
            if (!client_done) client_done = SSL_do_handshake(client) == 1;
            if (!server_done) server_done = SSL_do_handshake(server) == 1;
        }
        handshake_done = server_done && client_done;
    }
    ~TlsPair() {
        SSL_free(server);
        SSL_free(client);
        SSL_CTX_free(server_ctx);
        SSL_CTX_free(client_ctx);
        if (server_fd >= 0) close(server_fd);
        if (client_fd >= 0) close(client_fd);
    }

    // Everything the client can read now.
    std::string client_drain() {
        std::string out;
        char chunk[16384];
        for (;;) {
            const int n = SSL_read(client, chunk, sizeof chunk);
            if (n <= 0) return out;
            out.append(chunk, static_cast<std::size_t>(n));
        }
    }
};

std::uint8_t pattern(std::size_t offset) { return static_cast<std::uint8_t>(offset % 251); }

}  // namespace

TEST_CASE("raw_tls: the taken-over session's BIO names no descriptor, so the bufferevent closes nothing") {
    TlsPair pair;
    REQUIRE(pair.taken_over);
    REQUIRE(pair.handshake_done);
    // What bufferevent_openssl's destructor asks before closing a socket.
    CHECK(BIO_get_fd(SSL_get_wbio(pair.server), nullptr) == -1);
    CHECK(SSL_get_fd(pair.server) == -1);
    CHECK(SSL_get_read_ahead(pair.server) == 1);
    CHECK((SSL_get_mode(pair.server) & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER) != 0);
    CHECK((SSL_get_mode(pair.server) & SSL_MODE_ENABLE_PARTIAL_WRITE) != 0);
    // The socket is still open and usable.
    bool wants_read = true;
    CHECK(runtime::raw_tls::write(pair.server, "ok", 2, wants_read) == 2);
    CHECK_FALSE(wants_read);
    CHECK(pair.client_drain() == "ok");
}

TEST_CASE("raw_tls::read returns every record of one TCP write in one call") {
    TlsPair pair;
    REQUIRE(pair.handshake_done);
    std::string sent;
    for (int i = 0; i < 50; ++i) {
        const std::string record = "record " + std::to_string(i) + ";";
        REQUIRE(SSL_write(pair.client, record.data(), static_cast<int>(record.size())) ==
                static_cast<int>(record.size()));
        sent += record;
    }
    std::vector<std::uint8_t> buffer(65536);
    std::size_t got = 0;
    bool wants_write = true;
    CHECK(runtime::raw_tls::read(pair.server, buffer.data(), buffer.size(), got, wants_write) == 0);
    CHECK_FALSE(wants_write);
    CHECK(std::string(reinterpret_cast<const char*>(buffer.data()), got) == sent);
    // The socket is drained: nothing more, and still open.
    CHECK(runtime::raw_tls::read(pair.server, buffer.data(), buffer.size(), got, wants_write) == 0);
    CHECK(got == 0);
}

TEST_CASE("raw_tls::read stops at a full buffer and the rest comes with the next call") {
    TlsPair pair;
    REQUIRE(pair.handshake_done);
    std::string sent;
    for (int i = 0; i < 10; ++i) {
        const std::string record(100, static_cast<char>('a' + i));
        REQUIRE(SSL_write(pair.client, record.data(), 100) == 100);
        sent += record;
    }
    std::vector<std::uint8_t> buffer(65536);
    std::size_t got = 0;
    bool wants_write = false;
    CHECK(runtime::raw_tls::read(pair.server, buffer.data(), 250, got, wants_write) == 0);
    CHECK(got == 250);
    std::string received(reinterpret_cast<const char*>(buffer.data()), got);
    // No readiness event would report these: they are in OpenSSL's buffer.
    CHECK(SSL_has_pending(pair.server) == 1);
    CHECK(runtime::raw_tls::read(pair.server, buffer.data(), buffer.size(), got, wants_write) == 0);
    received.append(reinterpret_cast<const char*>(buffer.data()), got);
    CHECK(received == sent);
}

TEST_CASE("raw_tls::read: close_notify and a TCP close without it end the stream; a reset is an error") {
    std::vector<std::uint8_t> buffer(4096);
    std::size_t got = 0;
    bool wants_write = false;
    SUBCASE("close_notify after data: the data, then EOF") {
        TlsPair pair;
        REQUIRE(pair.handshake_done);
        REQUIRE(SSL_write(pair.client, "last", 4) == 4);
        SSL_shutdown(pair.client);
        CHECK(runtime::raw_tls::read(pair.server, buffer.data(), buffer.size(), got, wants_write) == BEV_EVENT_EOF);
        CHECK(std::string(reinterpret_cast<const char*>(buffer.data()), got) == "last");
    }
    // The server's session tickets are the only bytes the client has not
    // read: closing with them unread is a reset.
    for (const bool tickets_read : {true, false}) {
        CAPTURE(tickets_read);
        TlsPair pair;
        REQUIRE(pair.handshake_done);
        if (tickets_read) pair.client_drain();
        close(pair.client_fd);
        pair.client_fd = -1;
        CHECK(runtime::raw_tls::read(pair.server, buffer.data(), buffer.size(), got, wants_write) ==
              (tickets_read ? BEV_EVENT_EOF : BEV_EVENT_ERROR));
        CHECK(got == 0);
    }
}

TEST_CASE("raw_tls::read: a forged record is an error, not data") {
    TlsPair pair;
    REQUIRE(pair.handshake_done);
    // An application-data record whose authentication tag cannot match.
    const unsigned char forged[] = {0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                    17,   18,   19,   20,   21,   22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    REQUIRE(send(pair.client_fd, forged, sizeof forged, 0) == static_cast<ssize_t>(sizeof forged));
    std::vector<std::uint8_t> buffer(4096);
    std::size_t got = 0;
    bool wants_write = false;
    CHECK(runtime::raw_tls::read(pair.server, buffer.data(), buffer.size(), got, wants_write) == BEV_EVENT_ERROR);
    CHECK(got == 0);
}

TEST_CASE("raw_tls::write to a peer that is gone fails, without SIGPIPE") {
    TlsPair pair;
    REQUIRE(pair.handshake_done);
    close(pair.client_fd);
    pair.client_fd = -1;
    // With a plain write() the process would die of SIGPIPE here (the unit
    // tests do not ignore it).
    const std::string chunk(1024, 'x');
    ssize_t result = 0;
    bool wants_read = false;
    for (int i = 0; i < 10 && result >= 0; ++i) {
        result = runtime::raw_tls::write(pair.server, chunk.data(), chunk.size(), wants_read);
    }
    CHECK(result == -1);
}

TEST_CASE("raw_tls::write: a refused write is retried from a moved, longer buffer and the stream stays whole") {
    TlsPair pair;
    REQUIRE(pair.handshake_done);
    // The server writes the pattern until the socket is full (the client
    // reads nothing meanwhile).
    std::size_t accepted = 0;
    std::vector<std::uint8_t> block(16384);
    bool wants_read = false;
    ssize_t result = 1;
    for (int i = 0; i < 1000 && result > 0; ++i) {
        for (std::size_t j = 0; j < block.size(); ++j) block[j] = pattern(accepted + j);
        result = runtime::raw_tls::write(pair.server, block.data(), block.size(), wants_read);
        if (result > 0) accepted += static_cast<std::size_t>(result);
    }
    REQUIRE(result == 0);
    CHECK_FALSE(wants_read);
    std::string received = pair.client_drain();
    // Retried from a different, longer buffer with the same bytes first, as
    // raw_write_pending() does after evbuffer_pullup() and more appends.
    std::vector<std::uint8_t> moved(3 * block.size());
    for (std::size_t j = 0; j < moved.size(); ++j) moved[j] = pattern(accepted + j);
    std::size_t retried = 0;
    for (int turn = 0; turn < 10000 && retried < moved.size(); ++turn) {
        result = runtime::raw_tls::write(pair.server, moved.data() + retried, moved.size() - retried, wants_read);
        REQUIRE(result >= 0);
        if (result == 0) received += pair.client_drain();
        retried += static_cast<std::size_t>(result);
    }
    received += pair.client_drain();
    REQUIRE(retried == moved.size());
    REQUIRE(received.size() == accepted + moved.size());
    std::size_t first_bad = received.size();
    for (std::size_t j = 0; j < received.size() && first_bad == received.size(); ++j) {
        if (static_cast<std::uint8_t>(received[j]) != pattern(j)) first_bad = j;
    }
    CHECK(first_bad == received.size());
}
