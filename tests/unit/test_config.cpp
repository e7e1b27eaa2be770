// Configuration loading: the example files, defaults, every error with its
// exact text (file:line:column: key path: reason), durations, addresses and
// route matching.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "config_support.h"

namespace {

using config::Config;
using config::Duration;
using config::Error;
using config::LoadResult;
using config_test::base;
using config_test::kBase;
using config_test::load_error;
using config_test::load_errors;
using config_test::load_ok;
using config_test::loaded;

using namespace std::chrono_literals;

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

std::string load_error_of_file(const std::string& path) {
    const LoadResult result = config::load_file(path);
    REQUIRE(std::holds_alternative<std::vector<Error>>(result));
    const auto& errors = std::get<std::vector<Error>>(result);
    REQUIRE(errors.size() == 1);
    return errors[0].to_string();
}

}  // namespace

TEST_CASE("config: conf/wsgate.toml, the reference file") {
    const auto cfg = loaded(config::load_file("conf/wsgate.toml"));
    CHECK(cfg->source_path == "conf/wsgate.toml");
    CHECK(cfg->server.workers == 0);
    CHECK(cfg->server.max_connections == 100000);
    CHECK(cfg->server.drain_timeout == 30s);
    CHECK(cfg->log.access == "-");
    CHECK(cfg->log.format == config::LogFormat::Json);
    CHECK(cfg->log.error == "-");
    CHECK(cfg->log.level == config::LogLevel::Info);
    REQUIRE(cfg->admin.listen.has_value());
    CHECK(cfg->admin.listen->text == "127.0.0.1:9090");
    REQUIRE(cfg->listeners.size() == 1);
    CHECK(cfg->listeners[0].listen.text == "127.0.0.1:8080");
    CHECK(cfg->timeouts.handshake == 10s);
    CHECK(cfg->timeouts.connect == 5s);
    CHECK(cfg->timeouts.idle == 5min);
    CHECK(cfg->heartbeat.interval == 30s);
    CHECK(cfg->heartbeat.timeout == 10s);
    CHECK(cfg->heartbeat.peers == config::HeartbeatPeers::Client);
    CHECK(cfg->limits.max_header_bytes == 16384);
    CHECK(cfg->limits.max_message_bytes == 0);
    CHECK(cfg->limits.max_connections_per_ip == 0);
    CHECK(cfg->limits.buffer_bytes == 262144);
    REQUIRE(cfg->routes.size() == 1);
    CHECK(cfg->routes[0].path_prefix == "/");
    CHECK(cfg->routes[0].host == "");
    CHECK(cfg->routes[0].pool == "main");
    CHECK(cfg->routes[0].pool_index == 0);
    REQUIRE(cfg->pools.size() == 1);
    const config::Pool& pool = cfg->pools[0];
    CHECK(pool.name == "main");
    CHECK(pool.hash.source == chash::KeySource::Ip);
    CHECK(pool.algorithm == chash::Algorithm::Ring);
    CHECK(pool.balance_factor == 0.0);
    REQUIRE(pool.backends.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        const std::string address = "127.0.0.1:900" + std::to_string(i + 1);
        CHECK(pool.backends[i].address.text == address);
        CHECK(pool.backends[i].id == address);
        CHECK(pool.backends[i].weight == 1);
    }
}

TEST_CASE("config: conf/minimal.toml gets defaults and the implicit route") {
    const auto cfg = loaded(config::load_file("conf/minimal.toml"));
    const Config defaults;
    CHECK(cfg->server.workers == defaults.server.workers);
    CHECK(cfg->server.max_connections == 100000);
    CHECK(cfg->server.drain_timeout == 30s);
    CHECK(cfg->log.access == "-");
    CHECK(cfg->log.level == config::LogLevel::Info);
    CHECK_FALSE(cfg->admin.listen.has_value());
    CHECK(cfg->timeouts.idle == 5min);
    CHECK(cfg->heartbeat.interval == 30s);
    CHECK(cfg->limits.buffer_bytes == 262144);
    REQUIRE(cfg->listeners.size() == 1);
    REQUIRE(cfg->pools.size() == 1);
    REQUIRE(cfg->pools[0].backends.size() == 1);
    CHECK(cfg->pools[0].backends[0].id == "127.0.0.1:9001");
    CHECK(cfg->pools[0].hash.source == chash::KeySource::Ip);
    REQUIRE(cfg->routes.size() == 1);
    CHECK(cfg->routes[0].path_prefix == "/");
    CHECK(cfg->routes[0].host == "");
    CHECK(cfg->routes[0].pool == "main");
    CHECK(cfg->match_route("anything", "/x") == &cfg->routes[0]);
}

TEST_CASE("config: every value set away from its default") {
    const auto cfg = load_ok(R"(
[server]
workers = 4
max_connections = 10
drain_timeout = "0s"
[log]
access = ""
format = "text"
error = "/var/log/wsgate/error.log"
level = "debug"
[admin]
listen = "[::1]:9090"
[[listener]]
listen = "0.0.0.0:8080"
[[listener]]
listen = "[::]:8080"
[timeouts]
handshake = "250ms"
connect = "1s"
idle = "0s"
[heartbeat]
interval = "0s"
timeout = "0s"
peers = "both"
[limits]
max_header_bytes = 1024
max_message_bytes = 1048576
max_connections_per_ip = 3
buffer_bytes = 4096
[[route]]
path_prefix = "/chat"
host = "Chat.Example.COM"
pool = "chat"
[[route]]
host = "*.example.com"
pool = "other"
[[pool]]
name = "chat"
hash = "header:X-User"
algorithm = "maglev"
balance_factor = 1.25
[[pool.backend]]
address = "[2001:DB8::1]:9001"
weight = 256
id = "a"
[[pool.backend]]
address = "10.0.0.2:9001"
[[pool]]
name = "other"
hash = "cookie:sid"
balance_factor = 2
backend = [{ address = "10.0.0.3:1" }]
)");
    CHECK(cfg->server.workers == 4);
    CHECK(cfg->server.max_connections == 10);
    CHECK(cfg->server.drain_timeout == 0ms);
    CHECK(cfg->log.access == "");
    CHECK(cfg->log.format == config::LogFormat::Text);
    CHECK(cfg->log.error == "/var/log/wsgate/error.log");
    CHECK(cfg->log.level == config::LogLevel::Debug);
    CHECK(cfg->admin.listen->text == "[::1]:9090");
    REQUIRE(cfg->listeners.size() == 2);
    CHECK(cfg->listeners[1].listen.text == "[::]:8080");
    CHECK(cfg->timeouts.handshake == 250ms);
    CHECK(cfg->timeouts.connect == 1s);
    CHECK(cfg->timeouts.idle == 0ms);
    CHECK(cfg->heartbeat.interval == 0ms);
    CHECK(cfg->heartbeat.timeout == 0ms);
    CHECK(cfg->heartbeat.peers == config::HeartbeatPeers::Both);
    CHECK(cfg->limits.max_header_bytes == 1024);
    CHECK(cfg->limits.max_message_bytes == 1048576);
    CHECK(cfg->limits.max_connections_per_ip == 3);
    CHECK(cfg->limits.buffer_bytes == 4096);
    REQUIRE(cfg->routes.size() == 2);
    CHECK(cfg->routes[0].host == "chat.example.com");
    CHECK(cfg->routes[0].pool_index == 0);
    CHECK(cfg->routes[1].path_prefix == "/");
    CHECK(cfg->routes[1].pool_index == 1);
    REQUIRE(cfg->pools.size() == 2);
    CHECK(cfg->pools[0].hash.source == chash::KeySource::Header);
    CHECK(cfg->pools[0].hash.name == "X-User");
    CHECK(cfg->pools[0].algorithm == chash::Algorithm::Maglev);
    CHECK(cfg->pools[0].balance_factor == 1.25);
    CHECK(cfg->pools[0].backends[0].address.text == "[2001:db8::1]:9001");
    CHECK(cfg->pools[0].backends[0].weight == 256);
    CHECK(cfg->pools[0].backends[0].id == "a");
    CHECK(cfg->pools[0].backends[1].id == "10.0.0.2:9001");
    CHECK(cfg->pools[1].hash.source == chash::KeySource::Cookie);
    CHECK(cfg->pools[1].balance_factor == 2.0);
    CHECK(cfg->pools[1].backends[0].address.text == "10.0.0.3:1");
}

TEST_CASE("config: Error::to_string") {
    CHECK(Error{"conf/x.toml", 12, 10, "pool[0].backend[1].weight: must be a positive integer, got 0"}.to_string() ==
          "conf/x.toml:12:10: pool[0].backend[1].weight: must be a positive integer, got 0");
    CHECK(Error{"x.toml", 0, 0, "cannot read: No such file or directory"}.to_string() ==
          "x.toml: cannot read: No such file or directory");
}

TEST_CASE("config: unreadable files") {
    CHECK(load_error_of_file("conf/no-such-file.toml") ==
          "conf/no-such-file.toml: cannot read: No such file or directory");
    CHECK(load_error_of_file("conf") == "conf: cannot read: Is a directory");
}

TEST_CASE("config: TOML syntax errors stop decoding and are the only error") {
    CHECK(load_error("a = 1\nb = = 2\n[server]\nworkers = \"x\"\n") ==
          "t.toml:2:5: Error while parsing value: could not determine value type");
    CHECK(load_error(base("[[pool]]\nname = \"x\"\nname = \"y\"\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:8: Error while parsing key-value pair: cannot redefine existing string 'name'");
    CHECK(load_error("[server\n") == "t.toml:1:8: Error while parsing table header: expected ']', saw '\\n'");
}

TEST_CASE("config: unknown keys at every level") {
    CHECK(load_error(base("[servr]\n")) ==
          "t.toml:7:2: servr: unknown key (expected server, log, admin, listener, timeouts, heartbeat, limits, "
          "route, pool or resolver)");
    CHECK(load_error(base("[server]\nwrkers = 2\n")) ==
          "t.toml:8:1: server.wrkers: unknown key (expected workers, max_connections, drain_timeout, pid_file or io)");
    CHECK(load_error(base("[log]\nacces = \"-\"\n")) ==
          "t.toml:8:1: log.acces: unknown key (expected access, format, error, level or empty_connections)");
    CHECK(load_error(base("[admin]\nlisten = \"127.0.0.1:9090\"\nport = 1\n")) ==
          "t.toml:9:1: admin.port: unknown key (expected listen or token)");
    CHECK(load_error(base("[timeouts]\nread = \"1s\"\n")) ==
          "t.toml:8:1: timeouts.read: unknown key (expected handshake, connect, idle, keepalive or response)");
    CHECK(load_error(base("[heartbeat]\nintervall = \"1s\"\n")) ==
          "t.toml:8:1: heartbeat.intervall: unknown key (expected interval, timeout or peers)");
    CHECK(load_error(base("[limits]\nmax_frame_bytes = 1\n")) ==
          "t.toml:8:1: limits.max_frame_bytes: unknown key (expected max_header_bytes, max_message_bytes, "
          "max_connections_per_ip, buffer_bytes, handshakes_per_ip, handshake_burst, h2_max_concurrent_streams, "
          "h2_stream_window_bytes or h2_connection_window_bytes)");
    CHECK(load_error(base("[[route]]\npool = \"main\"\nprefix = \"/\"\n")) ==
          "t.toml:9:1: route[0].prefix: unknown key (expected path_prefix, host, pool, allowed_origins or auth)");
    CHECK(load_error(base("wieght = 2\n")) ==
          "t.toml:7:1: pool[0].backend[0].wieght: unknown key (expected address, weight, id, tls or srv)");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nbackends = []\n[[pool.backend]]\naddress = \"127.0.0.1:1\"\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:1: pool[1].backends: unknown key (expected name, hash, algorithm, balance_factor, maglev_table_size, health, tls, sticky_cookie or backend)");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:1\"\ntls = true\n[[pool]]\nname = \"a\"\n"
                     "backend = [{address = \"127.0.0.1:2\"}]\n") ==
          "t.toml:3:7: listener[0].tls: expected a table ([listener.tls]), got a boolean");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:1\"\n[[pool]]\nname = \"a\"\n"
                     "backend = [{address = \"127.0.0.1:2\", w = 1}]\n") ==
          "t.toml:5:38: pool[0].backend[0].w: unknown key (expected address, weight, id, tls or srv)");
}

TEST_CASE("config: wrong types") {
    CHECK(load_error(base("[server]\nworkers = \"4\"\n")) == "t.toml:8:11: server.workers: expected an integer, got a string");
    CHECK(load_error(base("[server]\ndrain_timeout = 30\n")) ==
          "t.toml:8:17: server.drain_timeout: expected a duration: a non-negative integer and a unit ms, s, m or h, "
          "as in \"30s\", got an integer");
    CHECK(load_error(base("[log]\naccess = false\n")) == "t.toml:8:10: log.access: expected a string, got a boolean");
    CHECK(load_error(base("[log]\nlevel = 1\n")) == "t.toml:8:9: log.level: expected a string, got an integer");
    CHECK(load_error(base("[limits]\nbuffer_bytes = 4096.0\n")) ==
          "t.toml:8:16: limits.buffer_bytes: expected an integer, got a float");
    CHECK(load_error(base("[limits]\nmax_header_bytes = 1979-05-27\n")) ==
          "t.toml:8:20: limits.max_header_bytes: expected an integer, got a date");
    CHECK(load_error(std::string("server = 1\n") + std::string(kBase)) ==
          "t.toml:1:10: server: expected a table ([server]), got an integer");
    CHECK(load_error("[listener]\nlisten = \"127.0.0.1:1\"\n"
                     "[[pool]]\nname = \"a\"\n[[pool.backend]]\naddress = \"127.0.0.1:2\"\n") ==
          "t.toml:1:1: listener: expected an array of tables ([[listener]]), got a table");
    CHECK(load_error(base("[[route]]\npool = 7\n")) == "t.toml:8:8: route[0].pool: expected a string, got an integer");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nbackend = [\"127.0.0.1:1\"]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:12: pool[1].backend[0]: expected a table, got a string");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nbalance_factor = \"1.5\"\n[[pool.backend]]\naddress = \"127.0.0.1:1\"\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:18: pool[1].balance_factor: expected a number, got a string");
    CHECK(load_error(base("[admin]\nlisten = 9090\n")) ==
          "t.toml:8:10: admin.listen: expected a string \"IPv4:port\" or \"[IPv6]:port\", got an integer");
}

TEST_CASE("config: bad values") {
    // The example of the contract: a weight of 0.
    CHECK(load_error(base("[[pool.backend]]\naddress = \"127.0.0.1:9002\"\nweight = 0\n")) ==
          "t.toml:9:10: pool[0].backend[1].weight: must be a positive integer, got 0");
    CHECK(load_error(base("weight = -3\n")) == "t.toml:7:10: pool[0].backend[0].weight: must be a positive integer, got -3");
    CHECK(load_error(base("weight = 257\n")) ==
          "t.toml:7:10: pool[0].backend[0].weight: must be between 1 and 256, got 257");
    CHECK(load_error(base("[server]\nworkers = 257\n")) == "t.toml:8:11: server.workers: must be between 0 and 256, got 257");
    CHECK(load_error(base("[server]\nworkers = -1\n")) == "t.toml:8:11: server.workers: must be between 0 and 256, got -1");
    CHECK(load_error(base("[server]\nmax_connections = 0\n")) ==
          "t.toml:8:19: server.max_connections: must be a positive integer, got 0");
    CHECK(load_error(base("[limits]\nmax_header_bytes = 1023\n")) ==
          "t.toml:8:20: limits.max_header_bytes: must be between 1024 and 1048576, got 1023");
    CHECK(load_error(base("[limits]\nmax_header_bytes = 1048577\n")) ==
          "t.toml:8:20: limits.max_header_bytes: must be between 1024 and 1048576, got 1048577");
    CHECK(load_error(base("[limits]\nmax_message_bytes = -1\n")) ==
          "t.toml:8:21: limits.max_message_bytes: must be a non-negative integer, got -1");
    CHECK(load_error(base("[limits]\nmax_connections_per_ip = -5\n")) ==
          "t.toml:8:26: limits.max_connections_per_ip: must be a non-negative integer, got -5");
    CHECK(load_error(base("[limits]\nbuffer_bytes = 4095\n")) ==
          "t.toml:8:16: limits.buffer_bytes: must be at least 4096, got 4095");
    CHECK(load_error(base("[timeouts]\nidle = \"5 min\"\n")) ==
          "t.toml:8:8: timeouts.idle: expected a duration: a non-negative integer and a unit ms, s, m or h, "
          "as in \"30s\", got \"5 min\"");
    CHECK(load_error(base("[timeouts]\nconnect = \"0s\"\n")) == "t.toml:8:11: timeouts.connect: must be greater than 0s, got \"0s\"");
    CHECK(load_error(base("[timeouts]\nhandshake = \"0ms\"\n")) ==
          "t.toml:8:13: timeouts.handshake: must be greater than 0s, got \"0ms\"");
    CHECK(load_error(base("[heartbeat]\ntimeout = \"0s\"\n")) ==
          "t.toml:8:11: heartbeat.timeout: must be greater than 0s when heartbeat.interval is not 0s, got \"0s\"");
    CHECK(load_error(base("[heartbeat]\npeers = \"server\"\n")) ==
          "t.toml:8:9: heartbeat.peers: expected \"client\", \"backend\" or \"both\", got \"server\"");
    CHECK(load_error(base("[log]\nformat = \"xml\"\n")) == "t.toml:8:10: log.format: expected \"json\" or \"text\", got \"xml\"");
    CHECK(load_error(base("[log]\nlevel = \"trace\"\n")) ==
          "t.toml:8:9: log.level: expected \"debug\", \"info\", \"warn\" or \"error\", got \"trace\"");
    CHECK(load_error(base("[log]\nerror = \"\"\n")) == "t.toml:8:9: log.error: expected a path or \"-\" (stderr), got \"\"");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nhash = \"header:\"\nbackend = [{address = \"127.0.0.1:1\"}]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:8: pool[1].hash: expected \"ip\", \"path\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"claim:NAME\", "
          "got \"header:\"");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nalgorithm = \"rendezvous\"\nbackend = [{address = \"127.0.0.1:1\"}]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:13: pool[1].algorithm: expected \"ring\" or \"maglev\", got \"rendezvous\"");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nbalance_factor = 1.0\nbackend = [{address = \"127.0.0.1:1\"}]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:18: pool[1].balance_factor: must be 0 (off) or greater than 1.0, got 1");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nbalance_factor = inf\nbackend = [{address = \"127.0.0.1:1\"}]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:18: pool[1].balance_factor: must be 0 (off) or greater than 1.0, got inf");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nbalance_factor = -2\nbackend = [{address = \"127.0.0.1:1\"}]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:9:18: pool[1].balance_factor: must be 0 (off) or greater than 1.0, got -2");
    CHECK(load_error(base("[[pool]]\nname = \"\"\nbackend = [{address = \"127.0.0.1:1\"}]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:8:8: pool[1].name: must not be empty");
    CHECK(load_error(base("[[route]]\npath_prefix = \"api\"\npool = \"main\"\n")) ==
          "t.toml:8:15: route[0].path_prefix: must start with \"/\", got \"api\"");
    CHECK(load_error(base("[[route]]\nhost = \"example.com:80\"\npool = \"main\"\n")) ==
          "t.toml:8:8: route[0].host: expected a host name, \"*.domain\" or a numeric address (without a port), "
          "got \"example.com:80\"");
    CHECK(load_error(base("[[route]]\nhost = \"a.*.com\"\npool = \"main\"\n")) ==
          "t.toml:8:8: route[0].host: expected a host name, \"*.domain\" or a numeric address (without a port), "
          "got \"a.*.com\"");
    // Control bytes in a value are escaped in the message.
    CHECK(load_error(base("[log]\nlevel = \"\\u0007\\\"\"\n")) ==
          "t.toml:8:9: log.level: expected \"debug\", \"info\", \"warn\" or \"error\", got \"\\x07\\\"\"");
}

TEST_CASE("config: addresses in the file") {
    CHECK(load_error(base("[admin]\nlisten = \"localhost:9090\"\n")) ==
          "t.toml:8:10: admin.listen: not a numeric IPv4 address (host names are not resolved), got \"localhost:9090\"");
    CHECK(load_error(base("[admin]\nlisten = \"127.0.0.1:0\"\n")) ==
          "t.toml:8:10: admin.listen: the port must be a number between 1 and 65535, got \"127.0.0.1:0\"");
    CHECK(load_error("[[listener]]\nlisten = \"::1:8080\"\n[[pool]]\nname = \"a\"\nbackend = [{address = \"127.0.0.1:2\"}]\n") ==
          "t.toml:2:10: listener[0].listen: an IPv6 address needs brackets, as in \"[::1]:8080\", got \"::1:8080\"");
    CHECK(load_error(base("[[pool.backend]]\naddress = \"127.0.0.1\"\n")) ==
          "t.toml:8:11: pool[0].backend[1].address: missing \":port\", got \"127.0.0.1\"");
    CHECK(load_error(base("[[pool.backend]]\naddress = \"127.0.0.1:65536\"\n")) ==
          "t.toml:8:11: pool[0].backend[1].address: the port must be a number between 1 and 65535, got \"127.0.0.1:65536\"");
    CHECK(load_error(base("[[pool.backend]]\naddress = \"[::1:80\"\n")) ==
          "t.toml:8:11: pool[0].backend[1].address: unterminated \"[\" in IPv6 address, got \"[::1:80\"");
    CHECK(load_error(base("[[pool.backend]]\naddress = \"[::g]:80\"\n")) ==
          "t.toml:8:11: pool[0].backend[1].address: not a numeric IPv6 address, got \"[::g]:80\"");
}

TEST_CASE("config: duplicates and dangling references") {
    CHECK(load_error(base("[[listener]]\nlisten = \"127.0.0.1:08080\"\n")) ==
          "t.toml:8:10: listener[1].listen: duplicate of listener[0].listen \"127.0.0.1:8080\"");
    CHECK(load_error(base("[admin]\nlisten = \"127.0.0.1:8080\"\n")) ==
          "t.toml:8:10: admin.listen: same address as a [[listener]] \"127.0.0.1:8080\"");
    CHECK(load_error(base("[[pool]]\nname = \"main\"\nbackend = [{address = \"127.0.0.1:1\"}]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:8:8: pool[1].name: duplicate pool name \"main\" (first defined by pool[0])");
    // An id defaulted from the address points at the address.
    CHECK(load_error(base("[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n")) ==
          "t.toml:8:11: pool[0].backend[1].address: duplicate backend id \"127.0.0.1:9001\" in pool (first used by "
          "backend[0])");
    CHECK(load_error(base("id = \"a\"\n[[pool.backend]]\naddress = \"127.0.0.1:9002\"\nid = \"a\"\n")) ==
          "t.toml:10:6: pool[0].backend[1].id: duplicate backend id \"a\" in pool (first used by backend[0])");
    // The same address twice with distinct ids is two members of the ring.
    CHECK(load_ok(base("id = \"a\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\nid = \"b\"\n"))->pools[0].backends.size() == 2);
    CHECK(load_error(base("[[route]]\npool = \"mian\"\n")) == "t.toml:8:8: route[0].pool: unknown pool \"mian\"");
    CHECK(load_error(base("[[route]]\npool = \"main\"\n[[route]]\npath_prefix = \"/\"\npool = \"main\"\n")) ==
          "t.toml:9:1: route[1]: same host and path_prefix as route[0] (\"\", \"/\")");
    // Hosts compare case-insensitively.
    CHECK(load_error(base("[[route]]\nhost = \"A.com\"\npool = \"main\"\n[[route]]\nhost = \"a.COM\"\npool = \"main\"\n")) ==
          "t.toml:10:1: route[1]: same host and path_prefix as route[0] (\"a.com\", \"/\")");
}

TEST_CASE("config: missing keys and sections") {
    CHECK(load_error("[[pool]]\nname = \"a\"\n[[pool.backend]]\naddress = \"127.0.0.1:1\"\n") ==
          "t.toml: listener: at least one [[listener]] is required");
    CHECK(load_error("listener = []\n[[pool]]\nname = \"a\"\n[[pool.backend]]\naddress = \"127.0.0.1:1\"\n") ==
          "t.toml:1:12: listener: at least one [[listener]] is required");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:1\"\n") == "t.toml: pool: at least one [[pool]] is required");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:1\"\n[[pool]]\nname = \"a\"\n") ==
          "t.toml:3:1: pool[0].backend: at least one [[pool.backend]] is required");
    CHECK(load_error("[[listener]]\n[[pool]]\nname = \"a\"\n[[pool.backend]]\naddress = \"127.0.0.1:1\"\n") ==
          "t.toml:1:1: listener[0].listen: required key is missing");
    CHECK(load_error(base("[[pool]]\nbackend = [{address = \"127.0.0.1:1\"}]\n[[route]]\npool = \"main\"\n")) ==
          "t.toml:7:1: pool[1].name: required key is missing");
    CHECK(load_error(base("[[pool.backend]]\nweight = 2\n")) == "t.toml:7:1: pool[0].backend[1].address: required key is missing");
    CHECK(load_error(base("[[route]]\npath_prefix = \"/\"\n")) == "t.toml:7:1: route[0].pool: required key is missing");
    CHECK(load_error(base("[admin]\n")) == "t.toml:7:1: admin.listen: required key is missing");
    CHECK(load_error("route = []\n" + std::string(kBase)) ==
          "t.toml:1:9: route: at least one [[route]] is required");
    CHECK(load_error(base("[[pool]]\nname = \"b\"\nbackend = [{address = \"127.0.0.1:1\"}]\n")) ==
          "t.toml: route: at least one [[route]] is required when there are several pools");
}

TEST_CASE("config: all errors of a file are reported, sorted by position") {
    const std::vector<std::string> errors = load_errors(R"([limits]
buffer_bytes = 1
[[pool]]
name = "a"
algorithm = "x"
[[pool.backend]]
address = "h!:1"
weight = 0
[[route]]
pool = "nowhere"
[server]
workers = "many"
bogus = 1
)");
    const std::vector<std::string> expected = {
        "t.toml: listener: at least one [[listener]] is required",
        "t.toml:2:16: limits.buffer_bytes: must be at least 4096, got 1",
        "t.toml:5:13: pool[0].algorithm: expected \"ring\" or \"maglev\", got \"x\"",
        "t.toml:7:11: pool[0].backend[0].address: a host name has only letters, digits, \"-\", \"_\" and dots, got \"h!:1\"",
        "t.toml:8:10: pool[0].backend[0].weight: must be a positive integer, got 0",
        "t.toml:10:8: route[0].pool: unknown pool \"nowhere\"",
        "t.toml:12:11: server.workers: expected an integer, got a string",
        "t.toml:13:1: server.bogus: unknown key (expected workers, max_connections, drain_timeout, pid_file or io)",
    };
    CHECK(errors == expected);
}

TEST_CASE("config: a route to a pool that has errors of its own is not reported twice") {
    CHECK(load_errors(base("[[pool]]\nname = \"b\"\n[[route]]\npool = \"b\"\n")) ==
          std::vector<std::string>{"t.toml:7:1: pool[1].backend: at least one [[pool.backend]] is required"});
}

TEST_CASE("config: every truncation of the reference file loads or reports positioned errors") {
    const std::string text = read_text("conf/wsgate.toml");
    REQUIRE(text.size() > 100);
    std::size_t valid = 0;
    for (std::size_t n = 0; n <= text.size(); ++n) {
        const LoadResult result = config::load_string(std::string_view(text).substr(0, n), "t.toml");
        if (std::holds_alternative<std::shared_ptr<const Config>>(result)) {
            ++valid;
            continue;
        }
        const auto& errors = std::get<std::vector<Error>>(result);
        REQUIRE_FALSE(errors.empty());
        for (const Error& e : errors) {
            REQUIRE(e.file == "t.toml");
            REQUIRE_FALSE(e.message.empty());
        }
    }
    // The file is valid from the end of its last backend's address on.
    CHECK(valid > 0);
}

TEST_CASE("config: parse_duration") {
    struct Case {
        std::string_view text;
        bool ok;
        Duration value;
    };
    const Case cases[] = {
        {"0s", true, 0ms},           {"0ms", true, 0ms},         {"250ms", true, 250ms},
        {"30s", true, 30s},          {"5m", true, 5min},         {"1h", true, 1h},
        {"0042s", true, 42s},        {"", false, 0ms},           {"s", false, 0ms},
        {"30", false, 0ms},          {"-1s", false, 0ms},        {"1.5s", false, 0ms},
        {"30 s", false, 0ms},        {" 30s", false, 0ms},       {"30S", false, 0ms},
        {"1d", false, 0ms},          {"1us", false, 0ms},        {"1m30s", false, 0ms},
        {"9223372036854775807ms", true, Duration(9223372036854775807)},
        {"9223372036854775808ms", false, 0ms},
        {"9223372036854775s", true, Duration(9223372036854775000)},
        {"9223372036854776s", false, 0ms},
        {"99999999999999999999999h", false, 0ms},
    };
    for (const Case& c : cases) {
        CAPTURE(c.text);
        Duration out = Duration(-7);
        CHECK(config::parse_duration(c.text, out) == c.ok);
        CHECK(out == (c.ok ? c.value : Duration(-7)));
    }
}

TEST_CASE("config: parse_socket_address") {
    struct Case {
        std::string_view text;
        bool ok;
        std::string_view normal;
        int family;
        unsigned port;
    };
    const Case cases[] = {
        {"127.0.0.1:80", true, "127.0.0.1:80", AF_INET, 80},
        {"0.0.0.0:8080", true, "0.0.0.0:8080", AF_INET, 8080},
        {"255.255.255.255:65535", true, "255.255.255.255:65535", AF_INET, 65535},
        {"10.0.0.1:0", true, "10.0.0.1:0", AF_INET, 0},
        {"10.0.0.1:00080", true, "10.0.0.1:80", AF_INET, 80},
        {"[::1]:80", true, "[::1]:80", AF_INET6, 80},
        {"[::]:8080", true, "[::]:8080", AF_INET6, 8080},
        {"[2001:DB8:0:0::1]:443", true, "[2001:db8::1]:443", AF_INET6, 443},
        {"[::ffff:1.2.3.4]:1", true, "[::ffff:1.2.3.4]:1", AF_INET6, 1},
        {"127.0.0.1:65536", false, "", 0, 0},
        {"127.0.0.1:100000", false, "", 0, 0},
        {"127.0.0.1:", false, "", 0, 0},
        {"127.0.0.1", false, "", 0, 0},
        {"127.0.0.1:-1", false, "", 0, 0},
        {"127.0.0.1:8a", false, "", 0, 0},
        {"127.0.0.1: 80", false, "", 0, 0},
        {"127.1:80", false, "", 0, 0},
        {"0x7f.0.0.1:80", false, "", 0, 0},
        {"256.0.0.1:80", false, "", 0, 0},
        {"localhost:80", false, "", 0, 0},
        {":80", false, "", 0, 0},
        {"::1:80", false, "", 0, 0},
        {"::1", false, "", 0, 0},
        {"[::1]", false, "", 0, 0},
        {"[::1]80", false, "", 0, 0},
        {"[::1:80", false, "", 0, 0},
        {"[1.2.3.4]:80", false, "", 0, 0},
        {"[fe80::1%eth0]:80", false, "", 0, 0},
        {"[::1]:80 ", false, "", 0, 0},
        {"", false, "", 0, 0},
    };
    for (const Case& c : cases) {
        CAPTURE(c.text);
        config::SocketAddress out;
        out.text = "untouched";
        REQUIRE(config::parse_socket_address(c.text, out) == c.ok);
        if (!c.ok) {
            CHECK(out.text == "untouched");
            continue;
        }
        CHECK(out.text == c.normal);
        CHECK(out.storage.ss_family == c.family);
        if (c.family == AF_INET) {
            const auto& sin = reinterpret_cast<const sockaddr_in&>(out.storage);
            CHECK(out.length == sizeof(sockaddr_in));
            CHECK(ntohs(sin.sin_port) == c.port);
        } else {
            const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(out.storage);
            CHECK(out.length == sizeof(sockaddr_in6));
            CHECK(ntohs(sin6.sin6_port) == c.port);
        }
    }
    config::SocketAddress v4;
    REQUIRE(config::parse_socket_address("192.0.2.7:9", v4));
    char text[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(v4.storage).sin_addr, text, sizeof text);
    CHECK(std::string(text) == "192.0.2.7");
}

TEST_CASE("config: match_route precedence") {
    const auto cfg = load_ok(R"(
[[listener]]
listen = "127.0.0.1:8080"
[[pool]]
name = "p"
backend = [{ address = "127.0.0.1:1" }]
[[route]]
path_prefix = "/"
pool = "p"
[[route]]
path_prefix = "/api"
pool = "p"
[[route]]
path_prefix = "/api/v2"
pool = "p"
[[route]]
host = "*.example.com"
pool = "p"
[[route]]
host = "*.b.example.com"
path_prefix = "/ws"
pool = "p"
[[route]]
host = "chat.example.com"
path_prefix = "/chat"
pool = "p"
[[route]]
host = "[::1]"
pool = "p"
)");
    const auto& r = cfg->routes;
    REQUIRE(r.size() == 7);
    struct Case {
        std::string_view host;
        std::string_view path;
        const config::Route* expected;
    };
    const Case cases[] = {
        {"other.org", "/", &r[0]},
        {"other.org", "/x", &r[0]},
        {"other.org", "/api", &r[1]},
        {"other.org", "/apix", &r[1]},  // byte prefix, not segment prefix
        {"other.org", "/api/v2/x", &r[2]},
        {"other.org", "/api/v", &r[1]},
        {"", "/api", &r[1]},
        {"other.org", "", nullptr},
        {"other.org", "x", nullptr},
        // A wildcard host beats "" even with a shorter prefix.
        {"a.example.com", "/api/v2", &r[3]},
        {"a.b.example.com", "/api", &r[3]},
        {"example.com", "/api", &r[1]},          // "*.example.com" needs a label in front
        {"xexample.com", "/", &r[0]},
        {".example.com", "/", &r[0]},
        // The longer wildcard wins where its prefix matches.
        {"x.b.example.com", "/ws/1", &r[4]},
        {"x.b.example.com", "/w", &r[3]},
        {"b.example.com", "/ws", &r[3]},
        // The exact host wins, but only where one of its routes matches the path.
        {"chat.example.com", "/chat/room", &r[5]},
        {"CHAT.Example.Com:8443", "/chat", &r[5]},
        {"chat.example.com.", "/chat", &r[5]},
        {"chat.example.com", "/api", &r[3]},
        {"chat.example.com", "/", &r[3]},
        {"[::1]:8080", "/x", &r[6]},
        {"[::1]", "/x", &r[6]},
        {"[::2]", "/x", &r[0]},
    };
    for (const Case& c : cases) {
        CAPTURE(c.host);
        CAPTURE(c.path);
        const config::Route* got = cfg->match_route(c.host, c.path);
        CHECK(got == c.expected);
    }
}

TEST_CASE("config: match_route with no catch-all route returns nullptr") {
    const auto cfg = load_ok(base("[[route]]\nhost = \"a.com\"\npath_prefix = \"/x\"\npool = \"main\"\n"));
    CHECK(cfg->match_route("a.com", "/x") == &cfg->routes[0]);
    CHECK(cfg->match_route("b.com", "/x") == nullptr);
    CHECK(cfg->match_route("a.com", "/y") == nullptr);
}

TEST_CASE("config: [pool.health] defaults, values and errors") {
    auto defaults = load_ok(kBase);
    const config::HealthCheck& d = defaults->pools[0].health;
    CHECK(d.type == config::HealthType::None);
    CHECK(d.path == "/");
    CHECK(d.interval == std::chrono::seconds(5));
    CHECK(d.timeout == std::chrono::seconds(2));
    CHECK(d.rise == 2);
    CHECK(d.fall == 3);
    CHECK(d.cooldown == std::chrono::seconds(10));

    auto cfg = load_ok(base("[pool.health]\ntype = \"websocket\"\npath = \"/health\"\ninterval = \"250ms\"\n"
                            "timeout = \"100ms\"\nrise = 1\nfall = 5\ncooldown = \"1m\"\n"));
    const config::HealthCheck& h = cfg->pools[0].health;
    CHECK(h.type == config::HealthType::Websocket);
    CHECK(h.path == "/health");
    CHECK(h.interval == std::chrono::milliseconds(250));
    CHECK(h.timeout == std::chrono::milliseconds(100));
    CHECK(h.rise == 1);
    CHECK(h.fall == 5);
    CHECK(h.cooldown == std::chrono::minutes(1));

    CHECK(load_error(base("[pool.health]\ntype = \"udp\"\n")) ==
          "t.toml:8:8: pool[0].health.type: expected \"tcp\", \"http\" or \"websocket\", got \"udp\"");
    CHECK(load_error(base("[pool.health]\npath = \"health\"\n")) ==
          "t.toml:8:8: pool[0].health.path: must start with \"/\", got \"health\"");
    CHECK(load_error(base("[pool.health]\ninterval = \"0s\"\n")) ==
          "t.toml:8:12: pool[0].health.interval: must be greater than 0s, got \"0s\"");
    CHECK(load_error(base("[pool.health]\nfall = 0\n")) ==
          "t.toml:8:8: pool[0].health.fall: must be a positive integer, got 0");
    CHECK(load_error(base("[pool.health]\nretries = 3\n")) ==
          "t.toml:8:1: pool[0].health.retries: unknown key (expected type, path, interval, timeout, rise, fall or cooldown)");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[pool]]\nname = \"main\"\nhealth = 1\n"
                     "[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n") ==
          "t.toml:5:10: pool[0].health: expected a table ([pool.health]), got an integer");
}

TEST_CASE("config: maglev_table_size must be a prime in range") {
    CHECK(load_ok(kBase)->pools[0].maglev_table_size == 65537);
    auto with = [](std::string_view size) {
        return "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[pool]]\nname = \"main\"\nalgorithm = \"maglev\"\n"
               "maglev_table_size = " + std::string(size) + "\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n";
    };
    CHECK(load_ok(with("131071"))->pools[0].maglev_table_size == 131071);
    CHECK(load_error(with("65536")) ==
          "t.toml:6:21: pool[0].maglev_table_size: must be a prime number (e.g. 65537, 131071, 655373), got 65536");
    CHECK(load_error(with("7")) == "t.toml:6:21: pool[0].maglev_table_size: must be between 251 and 16777259, got 7");
}

TEST_CASE("config: proxy_protocol combines with TLS") {
    // The PROXY header precedes the TLS handshake on such a listener: the
    // only problem here is the missing certificate.
    const auto errors = load_errors("[[listener]]\nlisten = \"127.0.0.1:8443\"\nproxy_protocol = true\n[listener.tls]\n"
                                    "cert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\n"
                                    "[[pool]]\nname = \"main\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n");
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].rfind("t.toml:4:1: listener[0].tls: /nonexistent.crt: cannot load certificate", 0) == 0);
}

TEST_CASE("config: plain HTTP settings: sticky_cookie, timeouts.keepalive and timeouts.response") {
    auto defaults = load_ok(kBase);
    CHECK(defaults->pools[0].sticky_cookie.empty());
    CHECK(defaults->timeouts.keepalive == std::chrono::seconds(60));
    CHECK(defaults->timeouts.response == std::chrono::seconds(60));

    auto cfg = load_ok("[timeouts]\nkeepalive = \"0s\"\nresponse = \"25s\"\n[[listener]]\nlisten = \"127.0.0.1:8080\"\n"
                       "[[pool]]\nname = \"main\"\nsticky_cookie = \"io_srv-1\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n");
    CHECK(cfg->timeouts.keepalive == 0ms);
    CHECK(cfg->timeouts.response == 25s);
    CHECK(cfg->pools[0].sticky_cookie == "io_srv-1");
    CHECK(load_ok("[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[pool]]\nname = \"main\"\nsticky_cookie = \"\"\n"
                  "[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n")
              ->pools[0]
              .sticky_cookie.empty());
    // A pool key, not a back-end key.
    CHECK(load_error(base("sticky_cookie = \"a\"\n")) ==
          "t.toml:7:1: pool[0].backend[0].sticky_cookie: unknown key (expected address, weight, id, tls or srv)");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[pool]]\nname = \"main\"\nsticky_cookie = \"a;b\"\n"
                     "[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n") ==
          "t.toml:5:17: pool[0].sticky_cookie: expected a cookie name (letters, digits and !#$%&'*+-.^_`|~), got \"a;b\"");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[pool]]\nname = \"main\"\nsticky_cookie = 1\n"
                     "[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n") ==
          "t.toml:5:17: pool[0].sticky_cookie: expected a string, got an integer");
    CHECK(load_error("[timeouts]\nresponse = \"0s\"\n" + base("")) ==
          "t.toml:2:12: timeouts.response: must be greater than 0s, got \"0s\"");
    CHECK(load_error("[timeouts]\nkeepalive = \"soon\"\n" + base("")) ==
          "t.toml:2:13: timeouts.keepalive: expected a duration: a non-negative integer and a unit ms, s, m or h, as in \"30s\", got \"soon\"");
}

TEST_CASE("config: [listener.tls] cipher profile and resumption keys") {
    const std::string key_file = "/tmp/wsgate-test-" + std::to_string(getpid()) + "-short.key";
    std::ofstream(key_file, std::ios::binary) << std::string(48, 'k');
    const auto errors = load_errors(
        "[[listener]]\nlisten = \"127.0.0.1:8443\"\n[listener.tls]\ncert = \"/nonexistent.crt\"\nkey = \"/nonexistent.key\"\n"
        "ciphers = \"ECDHE-RSA-AES128-GCM-SHA256:RC5\"\n"
        "ciphersuites = \"TLS_AES_999\"\n"
        "groups = \"X25519:P-999\"\n"
        "ticket_key_file = \"" + key_file + "\"\n"
        "session_cache = -1\n"
        "session_timeout = \"25h\"\n"
        "session_tickets = true\n"
        "[[pool]]\nname = \"main\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n");
    std::remove(key_file.c_str());
    REQUIRE(errors.size() == 7);
    CHECK(errors[0] == "t.toml:6:11: listener[0].tls.ciphers: unknown cipher \"RC5\"");
    CHECK(errors[1] == "t.toml:7:16: listener[0].tls.ciphersuites: unknown TLS 1.3 cipher suite \"TLS_AES_999\"");
    CHECK(errors[2] == "t.toml:8:10: listener[0].tls.groups: unknown group \"P-999\"");
    CHECK(errors[3] == "t.toml:9:19: listener[0].tls.ticket_key_file: " + key_file +
                           ": ticket key file must be exactly 80 bytes (made with `openssl rand 80`), got 48");
    CHECK(errors[4] == "t.toml:10:17: listener[0].tls.session_cache: must be between 0 and 10000000, got -1");
    CHECK(errors[5] == "t.toml:11:19: listener[0].tls.session_timeout: must be between 1s and 24h, got \"25h\"");
    CHECK(errors[6].rfind("t.toml:12:1: listener[0].tls.session_tickets: unknown key (expected ", 0) == 0);
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:8443\"\n[listener.tls]\ncert = \"/x.crt\"\nkey = \"/x.key\"\n"
                     "ticket_key_file = \"/nonexistent.key80\"\n"
                     "[[pool]]\nname = \"main\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n") ==
          "t.toml:6:19: listener[0].tls.ticket_key_file: /nonexistent.key80: cannot open ticket key file: "
          "No such file or directory");
}

TEST_CASE("config: admin.token and log.empty_connections") {
    const auto defaults = load_ok(kBase);
    CHECK(defaults->admin.token.empty());
    CHECK_FALSE(defaults->log.empty_connections);
    const auto cfg = load_ok(base("[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"s3cret\"\n[log]\nempty_connections = true\n"));
    CHECK(cfg->admin.token == "s3cret");
    CHECK(cfg->log.empty_connections);
    CHECK(load_error(base("[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"\"\n")) ==
          "t.toml:9:9: admin.token: expected a non-empty secret (or no token key at all)");
    CHECK(load_error(base("[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = 12\n")) ==
          "t.toml:9:9: admin.token: expected a string, got an integer");
    CHECK(load_error(base("[log]\nempty_connections = \"no\"\n")) ==
          "t.toml:8:21: log.empty_connections: expected true or false, got a string");
}
