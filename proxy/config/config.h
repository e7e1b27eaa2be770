// wsgate configuration: a TOML file decoded, validated and turned into an
// immutable Config. Parsing never touches sockets; a reload builds a new
// Config beside the old one and swaps it only when it is valid.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "auth/jwt.h"
#include "auth/key_source.h"
#include "balance/chash.h"
#include "net/cidr.h"
#include "net/tls.h"

namespace config {

using Duration = std::chrono::milliseconds;

// A numeric socket address: "1.2.3.4:80", "[::1]:80", "0.0.0.0:8080", "[::]:8080".
struct SocketAddress {
    sockaddr_storage storage{};
    socklen_t length = 0;
    std::string text;  // as written in the file, normalised ("[::1]:80")
};

// Parses "IPV4:PORT" or "[IPV6]:PORT" (port 0..65535). Host names are not
// resolved: a proxy must not depend on DNS at start. Returns false when invalid.
bool parse_socket_address(std::string_view text, SocketAddress& out);

// Parses "250ms", "30s", "5m", "1h" (a non-negative integer and a unit). "0s" is zero.
bool parse_duration(std::string_view text, Duration& out);

// How a raw tunnel's plain sockets are read and written: readiness events
// and recv/send (epoll), or one io_uring per worker that batches the
// receives and sends of a loop turn into one system call (io_uring).
enum class Io { Epoll, IoUring };

struct ServerSection {
    unsigned workers = 0;              // 0 = one per core (resolved at start)
    std::uint64_t max_connections = 100000;
    Duration drain_timeout = std::chrono::seconds(30);
    std::string pid_file;              // "" = none; the pid of the process accepting now
    Io io = Io::Epoll;                 // a reload's change applies to tunnels opened after it
};

enum class LogFormat { Json, Text };
enum class LogLevel { Debug, Info, Warn, Error };

struct LogSection {
    std::string access = "-";  // path, "-" = stdout, "" = off
    LogFormat format = LogFormat::Json;
    std::string error = "-";   // path or "-" = stderr
    LogLevel level = LogLevel::Info;
    // A connection that sent no byte (a port probe, a TCP health check)
    // writes an access-log line only when true; it is always counted in
    // wsgate_empty_connections_total (like HAProxy's dontlognull).
    bool empty_connections = false;
};

struct AdminSection {
    std::optional<SocketAddress> listen;  // absent = no admin endpoint
    std::string token;  // non-empty: POSTs need "Authorization: Bearer <token>"
};

struct Listener {
    SocketAddress listen;
    std::shared_ptr<const tls::ServerContext> tls;  // set: wss:// (TLS terminated here)
    bool proxy_protocol = false;   // connections start with a PROXY v1/v2 header
    net::CidrSet trusted_proxies;  // peers whose X-Forwarded-For names the client
    // HTTP/2 beside HTTP/1.1: ALPN "h2" on TLS (default on), h2c with prior
    // knowledge on plain listeners (default off).
    bool http2 = false;
};

struct Timeouts {
    Duration handshake = std::chrono::seconds(10);
    Duration connect = std::chrono::seconds(5);
    Duration idle = std::chrono::minutes(5);  // 0 = off
    // Plain HTTP: how long a kept-alive client connection, or an idle pooled
    // back-end connection, may wait for its next request (0 = no keep-alive).
    Duration keepalive = std::chrono::seconds(60);
    // Plain HTTP: how long the back end may take to start its response once
    // the request is sent (long enough for long-polling).
    Duration response = std::chrono::seconds(60);
};

enum class HeartbeatPeers { Client, Backend, Both };

struct Heartbeat {
    Duration interval = std::chrono::seconds(30);  // 0 = off
    Duration timeout = std::chrono::seconds(10);
    HeartbeatPeers peers = HeartbeatPeers::Client;
};

struct Limits {
    std::uint64_t max_header_bytes = 16384;
    std::uint64_t max_message_bytes = 0;       // 0 = unlimited
    std::uint64_t max_connections_per_ip = 0;  // 0 = unlimited
    std::uint64_t buffer_bytes = 262144;       // high watermark per direction
    double handshakes_per_ip = 0;              // per second per client address; 0 = unlimited
    std::uint32_t handshake_burst = 0;         // bucket size; 0 = max(1, handshakes_per_ip)
    // HTTP/2 front end: streams one connection may have open at once
    // (SETTINGS_MAX_CONCURRENT_STREAMS), and the receive windows: how many
    // bytes a client may send on one stream, and on the whole connection,
    // before wsgate's back ends have taken them.
    std::uint64_t h2_max_concurrent_streams = 100;
    std::uint64_t h2_stream_window_bytes = 262144;
    std::uint64_t h2_connection_window_bytes = 4194304;
};

// Where a route finds the client's token.
enum class TokenSource { Header, Cookie, Query };

struct RouteAuth {
    std::shared_ptr<const jwt::Verifier> verifier;
    TokenSource token_from = TokenSource::Header;  // Header: "Authorization: Bearer <token>"
    std::string token_name;                        // cookie or query parameter name
    std::vector<std::string> forward_claims;       // claim -> "X-Auth-<Claim>" header
    // jwks_file / jwks_url: the route's JWK Set (the verifier then checks
    // against keys->current()); nullptr with key_file.
    std::shared_ptr<jwks::Source> keys;
    std::string label;                        // "host/prefix", for logs and metrics
    bool close_on_expiry = false;             // close 1008 when the token's exp passes
    std::uint64_t max_sessions_per_subject = 0;  // 0 = unlimited
};

struct Route {
    std::string path_prefix = "/";
    std::string host;  // "" = any; "*.example.com" matches one or more labels
    std::string pool;
    std::size_t pool_index = 0;  // filled by validation: index into Config::pools
    std::vector<std::string> allowed_origins;  // empty = any Origin; "https://*.example.com" allowed
    std::optional<RouteAuth> auth;
};

struct Backend {
    SocketAddress address;
    std::uint32_t weight = 1;
    std::string id;  // defaults to address.text
    bool tls = false;  // connect with TLS (the pool's [pool.tls] settings)
    std::string source;  // discovered members: the name they came from ("" = written in the file)
};

// A [[pool.backend]] whose members come from DNS (config/discovery.h):
// `address = "NAME:PORT"` (every A/AAAA address of NAME) or `srv = "NAME"`
// (every SRV target:port of NAME).
struct BackendSource {
    bool srv = false;
    std::string name;        // the DNS name queried, as written (no trailing dot added)
    std::uint16_t port = 0;  // address sources; SRV records carry their own
    std::uint32_t weight = 1;  // address sources; SRV members take the record's weight
    bool tls = false;
    std::string text;        // as written: "chat.local:9000" or "_ws._tcp.chat.local"
};

// [resolver]: how discovered pools are re-resolved.
struct ResolverSection {
    std::vector<SocketAddress> servers;  // empty = the nameservers of /etc/resolv.conf
    Duration interval = std::chrono::seconds(5);
    Duration timeout = std::chrono::seconds(2);
    Duration hold = std::chrono::seconds(60);
};

enum class HealthType { None, Tcp, Http, Websocket };

// Health checking of a pool's back ends. Active probes run only with a type;
// passive checking (consecutive connect failures) is always on.
struct HealthCheck {
    HealthType type = HealthType::None;
    std::string path = "/";                          // http and websocket probes
    Duration interval = std::chrono::seconds(5);
    Duration timeout = std::chrono::seconds(2);
    unsigned rise = 2;   // consecutive successes that bring a down back end up
    unsigned fall = 3;   // consecutive failures (probes or connects) that take it down
    Duration cooldown = std::chrono::seconds(10);    // passive: how long a failing back end is skipped
};

struct Pool {
    std::string name;
    chash::KeySpec hash;
    chash::Algorithm algorithm = chash::Algorithm::Ring;
    double balance_factor = 0.0;  // > 1 enables bounded loads
    std::uint64_t maglev_table_size = 65537;  // a prime; larger moves fewer keys when back ends change
    HealthCheck health;
    std::shared_ptr<const tls::ClientContext> tls;  // set when some backend has tls = true
    // Plain HTTP: when set, the first response names the chosen back end in
    // this cookie, and later requests and upgrades carrying it return there
    // while it is eligible. A cookie-name token; "" = off.
    std::string sticky_cookie;
    std::vector<Backend> backends;
    std::vector<BackendSource> sources;  // DNS names whose members join <backends> at run time
};

struct Config {
    std::string source_path;
    ServerSection server;
    LogSection log;
    AdminSection admin;
    std::vector<Listener> listeners;
    Timeouts timeouts;
    Heartbeat heartbeat;
    Limits limits;
    std::vector<Route> routes;
    std::vector<Pool> pools;
    ResolverSection resolver;

    // The route for a request, or nullptr (-> 404): among the routes whose
    // host matches <host> (port and a trailing "." stripped, case-insensitive;
    // "" matches any) and whose path_prefix is a byte prefix of <path>, the
    // one with the most specific host (an exact host beats a wildcard, a
    // longer wildcard beats a shorter one, a wildcard beats ""), and among
    // those the longest path_prefix. Host first, as virtual hosts in nginx
    // and Envoy: a catch-all route never captures a named host's traffic
    // that one of the host's own routes matches.
    const Route* match_route(std::string_view host, std::string_view path) const;
};

// One problem in a file: "FILE:LINE:COL: message".
struct Error {
    std::string file;
    unsigned line = 0;
    unsigned column = 0;
    std::string message;
    std::string to_string() const;
};

using LoadResult = std::variant<std::shared_ptr<const Config>, std::vector<Error>>;

// Reads, decodes and validates <path>. All errors of the file are returned,
// not only the first: unknown keys, wrong types, bad values, duplicates,
// dangling references.
LoadResult load_file(const std::string& path);

// The same for text already in memory; <name> is used as FILE in errors.
LoadResult load_string(std::string_view text, const std::string& name);

}  // namespace config
