// TLS session resumption (net/tls_session.h, ServerContext::share_sessions):
// the ticket key file format, the key ring's rotation, the session-ID
// cache, and in-process handshakes over a BIO pair that show which server
// contexts resume each other's sessions.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "net/tls.h"
#include "net/tls_session.h"
#include "tls_support.h"

namespace {

std::string bytes(std::size_t n, unsigned char first = 0) {
    std::string out(n, '\0');
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>(first + i);
    return out;
}

std::string temp_path(const std::string& name) {
    return "/tmp/wsgate-test-" + std::to_string(getpid()) + "-" + name;
}

void write_file(const std::string& path, const std::string& content) {
    std::ofstream(path, std::ios::binary) << content;
}

// A certificate and key in /tmp for the server side of the handshakes.
struct Pair : tls_test::SelfSigned {
    Pair() : SelfSigned("session", "session.test") {}
    tls::ServerSettings settings() const {
        tls::ServerSettings s;
        s.main = {cert, key};
        return s;
    }
};

std::shared_ptr<const tls::ServerContext> server(const tls::ServerSettings& settings) {
    auto made = tls::ServerContext::create(settings);
    REQUIRE(std::holds_alternative<std::shared_ptr<const tls::ServerContext>>(made));
    return std::get<std::shared_ptr<const tls::ServerContext>>(made);
}

struct Client {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL_SESSION* session = nullptr;
    explicit Client(bool tickets = true) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
        if (!tickets) {
            SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        }
    }
    ~Client() {
        if (session) SSL_SESSION_free(session);
        SSL_CTX_free(ctx);
    }

    // One handshake with <context> over a BIO pair, offering the session of
    // the previous one; true when it was resumed. Keeps the new session.
    bool connect(const tls::ServerContext& context) {
        SSL* c = SSL_new(ctx);
        SSL* s = context.new_ssl();
        BIO* client_bio = nullptr;
        BIO* server_bio = nullptr;
        BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
        SSL_set_bio(c, client_bio, client_bio);
        SSL_set_bio(s, server_bio, server_bio);
        SSL_set_connect_state(c);
        SSL_set_accept_state(s);
        if (session) SSL_set_session(c, session);
        bool done_c = false, done_s = false;
        for (int i = 0; i < 50 && !(done_c && done_s); ++i) {
            if (!done_c) done_c = SSL_do_handshake(c) == 1;
            if (!done_s) done_s = SSL_do_handshake(s) == 1;
        }
        REQUIRE(done_c);
        REQUIRE(done_s);
        // Application data after the server's NewSessionTicket messages: the
        // client reads the tickets on its way to the byte.
        char byte = 'x';
        REQUIRE(SSL_write(s, &byte, 1) == 1);
        REQUIRE(SSL_read(c, &byte, 1) == 1);
        const bool reused = SSL_session_reused(c) == 1;
        if (session) SSL_SESSION_free(session);
        session = SSL_get1_session(c);
        SSL_shutdown(c);
        SSL_shutdown(s);
        SSL_free(c);
        SSL_free(s);
        return reused;
    }
};

}  // namespace

TEST_CASE("ticket key files: nginx's 80-byte layout, anything else refused") {
    const std::string raw = bytes(80);
    auto parsed = tls::parse_ticket_key(raw);
    REQUIRE(std::holds_alternative<tls::TicketKey>(parsed));
    const tls::TicketKey& key = std::get<tls::TicketKey>(parsed);
    CHECK(key.name[0] == 0);
    CHECK(key.name[15] == 15);
    CHECK(key.hmac[0] == 16);
    CHECK(key.hmac[31] == 47);
    CHECK(key.aes[0] == 48);
    CHECK(key.aes[31] == 79);
    for (std::size_t size : {0, 48, 79, 81}) {
        auto bad = tls::parse_ticket_key(bytes(size));
        REQUIRE(std::holds_alternative<std::string>(bad));
        CHECK(std::get<std::string>(bad) ==
              "must be exactly 80 bytes (made with `openssl rand 80`), got " + std::to_string(size));
    }

    const std::string path = temp_path("ticket.key");
    write_file(path, raw);
    auto read = tls::read_ticket_key_file(path);
    REQUIRE(std::holds_alternative<tls::TicketKey>(read));
    CHECK(std::get<tls::TicketKey>(read) == key);
    write_file(path, bytes(79));
    auto short_file = tls::read_ticket_key_file(path);
    REQUIRE(std::holds_alternative<std::string>(short_file));
    CHECK(std::get<std::string>(short_file) ==
          path + ": ticket key file must be exactly 80 bytes (made with `openssl rand 80`), got 79");
    write_file(path, bytes(4096));
    auto long_file = tls::read_ticket_key_file(path);
    REQUIRE(std::holds_alternative<std::string>(long_file));
    CHECK(std::get<std::string>(long_file) ==
          path + ": ticket key file must be exactly 80 bytes (made with `openssl rand 80`), got more");
    std::remove(path.c_str());
    auto missing = tls::read_ticket_key_file(path);
    REQUIRE(std::holds_alternative<std::string>(missing));
    CHECK(std::get<std::string>(missing) == path + ": cannot open ticket key file: No such file or directory");
}

TEST_CASE("rotating ring: a new key every interval, replaced keys decrypt for keep_previous rotations") {
    tls::TicketKeyRing ring(std::chrono::seconds(3600), 2, 1000);
    const tls::TicketKey k0 = ring.encrypting(1000);
    CHECK(ring.encrypting(1000 + 3599) == k0);
    const tls::TicketKey k1 = ring.encrypting(1000 + 3600);
    CHECK_FALSE(k1 == k0);
    tls::TicketKey out;
    CHECK(ring.decrypting(k1.name.data(), out) == tls::TicketKeyRing::Match::Current);
    CHECK(out == k1);
    CHECK(ring.decrypting(k0.name.data(), out) == tls::TicketKeyRing::Match::Previous);
    CHECK(out == k0);
    ring.encrypting(1000 + 7200);
    CHECK(ring.decrypting(k0.name.data(), out) == tls::TicketKeyRing::Match::Previous);
    ring.encrypting(1000 + 10800);  // k0 is now three rotations old
    CHECK(ring.decrypting(k0.name.data(), out) == tls::TicketKeyRing::Match::None);
    CHECK(ring.size() == 3);
    // cover(): a 5 h session_timeout keeps five replaced keys.
    ring.cover(std::chrono::hours(5));
    for (int i = 4; i <= 10; ++i) ring.encrypting(1000 + 3600 * i);
    CHECK(ring.size() == 6);
    const unsigned char unknown[16] = {};
    CHECK(ring.decrypting(unknown, out) == tls::TicketKeyRing::Match::None);
}

TEST_CASE("fixed ring: adopt() makes a new key current, the previous one still decrypts") {
    const tls::TicketKey a = std::get<tls::TicketKey>(tls::parse_ticket_key(bytes(80, 1)));
    const tls::TicketKey b = std::get<tls::TicketKey>(tls::parse_ticket_key(bytes(80, 2)));
    const tls::TicketKey c = std::get<tls::TicketKey>(tls::parse_ticket_key(bytes(80, 3)));
    tls::TicketKeyRing ring(a);
    CHECK(ring.encrypting(0) == a);
    CHECK(ring.encrypting(1'000'000'000) == a);  // never rotates by itself
    ring.adopt(a);
    CHECK(ring.size() == 1);
    ring.adopt(b);
    tls::TicketKey out;
    CHECK(ring.encrypting(0) == b);
    CHECK(ring.decrypting(a.name.data(), out) == tls::TicketKeyRing::Match::Previous);
    ring.adopt(c);
    CHECK(ring.decrypting(b.name.data(), out) == tls::TicketKeyRing::Match::Previous);
    CHECK(ring.decrypting(a.name.data(), out) == tls::TicketKeyRing::Match::None);
}

TEST_CASE("session cache: expiry, capacity evicts the oldest, replace and remove") {
    tls::SessionCache cache(2);
    cache.put("a", "A", 100);
    cache.put("b", "B", 100);
    CHECK(cache.get("a", 99) == std::optional<std::string>("A"));
    CHECK_FALSE(cache.get("a", 100).has_value());  // expired and dropped
    CHECK(cache.size() == 1);
    cache.put("c", "C", 200);
    cache.put("d", "D", 200);  // "b" is the oldest
    CHECK_FALSE(cache.get("b", 0).has_value());
    CHECK(cache.get("c", 0) == std::optional<std::string>("C"));
    cache.put("c", "C2", 300);  // replaced: now the newest
    cache.put("e", "E", 300);   // evicts "d", not the replaced "c"
    CHECK(cache.get("c", 0) == std::optional<std::string>("C2"));
    CHECK_FALSE(cache.get("d", 0).has_value());
    cache.remove("c");
    CHECK_FALSE(cache.get("c", 0).has_value());
    for (int i = 0; i < 1000; ++i) cache.put("same", std::to_string(i), 500);
    CHECK(cache.get("same", 0) == std::optional<std::string>("999"));
    cache.set_capacity(0);
    CHECK(cache.size() == 0);
    cache.put("f", "F", 500);
    CHECK(cache.size() == 0);
}

TEST_CASE("session store: one rotating ring, a key ring and a cache per listener, kept across calls") {
    tls::SessionStore store(0);
    CHECK(store.rotating_ring() == store.rotating_ring());
    const tls::TicketKey a = std::get<tls::TicketKey>(tls::parse_ticket_key(bytes(80, 1)));
    const tls::TicketKey b = std::get<tls::TicketKey>(tls::parse_ticket_key(bytes(80, 2)));
    auto first = store.file_ring("127.0.0.1:443", a);
    auto again = store.file_ring("127.0.0.1:443", b);  // the file changed at a reload
    CHECK(first == again);
    tls::TicketKey out;
    CHECK(again->decrypting(a.name.data(), out) == tls::TicketKeyRing::Match::Previous);
    CHECK(store.file_ring("127.0.0.1:8443", a) != first);
    auto cache = store.cache("127.0.0.1:443", 10);
    CHECK(store.cache("127.0.0.1:443", 20) == cache);
    CHECK(store.cache("127.0.0.1:8443", 10) != cache);
}

TEST_CASE("resumption: tickets and session IDs survive a new context that shares the store") {
    Pair pair;
    tls::SessionStore store(std::time(nullptr));
    for (bool tickets : {true, false}) {
        CAPTURE(tickets);
        Client client(tickets);
        auto one = server(pair.settings());
        one->share_sessions(store, "127.0.0.1:443");
        CHECK_FALSE(client.connect(*one));
        CHECK(client.connect(*one));
        CHECK(client.connect(*one));  // again with the session the resumption gave
        // A reload: a new generation's context, the same store.
        auto two = server(pair.settings());
        two->share_sessions(store, "127.0.0.1:443");
        CHECK(client.connect(*two));
        // Without the store a new context knows neither the keys nor the IDs.
        auto alone = server(pair.settings());
        CHECK_FALSE(client.connect(*alone));
    }
}

TEST_CASE("resumption: a shared ticket key resumes across stores (processes); session_cache = 0 turns IDs off") {
    Pair pair;
    tls::ServerSettings settings = pair.settings();
    settings.ticket_key = std::get<tls::TicketKey>(tls::parse_ticket_key(bytes(80, 7)));
    tls::SessionStore store_a(0), store_b(0);
    auto a = server(settings);
    a->share_sessions(store_a, "127.0.0.1:443");
    auto b = server(settings);
    b->share_sessions(store_b, "127.0.0.1:443");
    Client client;
    CHECK_FALSE(client.connect(*a));
    CHECK(client.connect(*b));
    CHECK(client.connect(*a));

    tls::ServerSettings no_cache = pair.settings();
    no_cache.session_cache = 0;
    auto c = server(no_cache);
    c->share_sessions(store_a, "127.0.0.1:8443");
    Client legacy(false);
    CHECK_FALSE(legacy.connect(*c));
    CHECK_FALSE(legacy.connect(*c));
    Client modern;
    CHECK_FALSE(modern.connect(*c));
    CHECK(modern.connect(*c));
}

TEST_CASE("cipher, suite and group lists: OpenSSL must know every word") {
    CHECK(tls::check_ciphers(tls::kDefaultCiphers) == "");
    CHECK(tls::check_ciphers("ECDHE+AESGCM:!aNULL:@STRENGTH") == "");
    CHECK(tls::check_ciphers("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GMC-SHA256") ==
          "unknown cipher \"ECDHE-RSA-AES128-GMC-SHA256\"");
    CHECK(tls::check_ciphers("!ALL") == "OpenSSL selects no TLS 1.2 cipher from !ALL");
    CHECK(tls::check_ciphersuites(tls::kDefaultCiphersuites) == "");
    CHECK(tls::check_ciphersuites("TLS_AES_128_GCM_SHA256:TLS_AES_512") ==
          "unknown TLS 1.3 cipher suite \"TLS_AES_512\"");
    CHECK(tls::check_groups(tls::kDefaultGroups) == "");
    CHECK(tls::check_groups("X25519:P-999") == "unknown group \"P-999\"");
    CHECK(tls::check_groups("") == "OpenSSL refuses the group list \"\"");
}
