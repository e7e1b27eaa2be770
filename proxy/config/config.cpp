// Configuration: validate the decoded TOML tree (config_toml.h) against the
// schema and build an immutable Config. Three phases, as in twemproxy's
// conf_pre_validate -> conf_parse -> conf_post_validate:
//   1. decode: TOML syntax -> positioned tree (config_toml.cpp; a syntax error
//      stops here and is the only error reported);
//   2. validate each section: unknown keys, types, ranges, enumerations; a bad
//      value is reported and the default kept, so that later checks still run;
//   3. cross-check: duplicates, dangling references, dependent settings.
// Every problem becomes an Error naming the file, the line and column of the
// offending value (or of its table when a key is missing), the key path and
// what was expected; all of them are returned, sorted by position.
#include "config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <tuple>
#include <utility>

#include "balance/sticky.h"
#include "config/config_toml.h"
#include "config/discovery.h"

namespace config {

namespace {

using toml_doc::Kind;
using toml_doc::Node;
using toml_doc::Position;

constexpr std::int64_t kMaxInt = std::numeric_limits<std::int64_t>::max();

// Reads <path> whole into <text>; returns 0 or the errno of the failure.
int read_whole_file(const std::string& path, std::string& text) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    int error = 0;
    char buffer[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n > 0) {
            text.append(buffer, static_cast<std::size_t>(n));
        } else if (n == 0) {
            break;
        } else if (errno != EINTR) {
            error = errno;
            break;
        }
    }
    ::close(fd);
    return error;
}

// Why <text> is not a numeric socket address, or "" when it is one (then
// <out> is filled). Ports 0..65535 are accepted here; callers that need a
// connectable port check for 0 themselves.
std::string_view address_problem(std::string_view text, SocketAddress& out) {
    std::string_view host;
    std::string_view port_text;
    bool v6 = false;
    if (!text.empty() && text.front() == '[') {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) return "unterminated \"[\" in IPv6 address";
        host = text.substr(1, close - 1);
        const std::string_view rest = text.substr(close + 1);
        if (rest.empty() || rest.front() != ':') return "missing \":port\" after the IPv6 address";
        port_text = rest.substr(1);
        v6 = true;
    } else {
        const std::size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) return "missing \":port\"";
        host = text.substr(0, colon);
        if (host.find(':') != std::string_view::npos) {
            return "an IPv6 address needs brackets, as in \"[::1]:8080\"";
        }
        port_text = text.substr(colon + 1);
    }
    if (port_text.empty() || port_text.size() > 5 ||
        !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return "the port must be a number between 1 and 65535";
    }
    unsigned port = 0;
    std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port > 65535) return "the port must be a number between 1 and 65535";

    // inet_pton needs a NUL-terminated string; a host longer than any numeric
    // address is rejected before copying.
    char buffer[INET6_ADDRSTRLEN + 1];
    if (host.size() >= sizeof buffer) {
        return v6 ? "not a numeric IPv6 address" : "not a numeric IPv4 address (host names are not resolved)";
    }
    std::memcpy(buffer, host.data(), host.size());
    buffer[host.size()] = '\0';

    SocketAddress result;
    char normal[INET6_ADDRSTRLEN];
    if (v6) {
        sockaddr_in6 sin6{};
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(static_cast<std::uint16_t>(port));
        if (inet_pton(AF_INET6, buffer, &sin6.sin6_addr) != 1) return "not a numeric IPv6 address";
        inet_ntop(AF_INET6, &sin6.sin6_addr, normal, sizeof normal);
        std::memcpy(&result.storage, &sin6, sizeof sin6);
        result.length = sizeof sin6;
        result.text = "[" + std::string(normal) + "]:" + std::to_string(port);
    } else {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(static_cast<std::uint16_t>(port));
        // inet_pton(AF_INET) accepts only the dotted-decimal form a.b.c.d.
        if (inet_pton(AF_INET, buffer, &sin.sin_addr) != 1) {
            return "not a numeric IPv4 address (host names are not resolved)";
        }
        inet_ntop(AF_INET, &sin.sin_addr, normal, sizeof normal);
        std::memcpy(&result.storage, &sin, sizeof sin);
        result.length = sizeof sin;
        result.text = std::string(normal) + ":" + std::to_string(port);
    }
    out = std::move(result);
    return {};
}

std::uint16_t port_of(const SocketAddress& address) {
    if (address.storage.ss_family == AF_INET6) {
        return ntohs(reinterpret_cast<const sockaddr_in6&>(address.storage).sin6_port);
    }
    return ntohs(reinterpret_cast<const sockaddr_in&>(address.storage).sin_port);
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowercase(std::string_view text) {
    std::string out(text);
    std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
    return out;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

// A request's Host without ":port" and without a trailing root dot.
std::string_view bare_host(std::string_view host) {
    if (!host.empty() && host.front() == '[') {
        const std::size_t close = host.find(']');
        if (close != std::string_view::npos) host = host.substr(0, close + 1);
    } else {
        const std::size_t colon = host.find(':');
        if (colon != std::string_view::npos && host.rfind(':') == colon) host = host.substr(0, colon);
    }
    if (!host.empty() && host.back() == '.') host.remove_suffix(1);
    return host;
}

// How specifically route host <pattern> matches request host <host>: 0 = not
// at all; 1 = "" (any); 2 + suffix length = wildcard "*.suffix" (a longer
// suffix is more specific); kExactHost = the same name.
constexpr std::size_t kExactHost = std::numeric_limits<std::size_t>::max();

std::size_t host_rank(std::string_view pattern, std::string_view host) {
    if (pattern.empty()) return 1;
    if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
        const std::string_view suffix = pattern.substr(1);  // ".example.com"
        if (host.size() > suffix.size() && iequals(host.substr(host.size() - suffix.size()), suffix)) {
            return 2 + suffix.size();
        }
        return 0;
    }
    return iequals(pattern, host) ? kExactHost : 0;
}

// <text> quoted for a message, with control and non-ASCII bytes escaped and
// long values cut, so that hostile input cannot garble the error log.
std::string quote(std::string_view text) {
    constexpr std::size_t kMax = 64;
    std::string out = "\"";
    for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
        const unsigned char c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c < 0x20 || c >= 0x7f) {
            static constexpr char kHex[] = "0123456789abcdef";
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (text.size() > kMax) out += "...";
    out += '"';
    return out;
}

std::string format_double(double value) {
    char buffer[64];
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
    return std::string(buffer, result.ptr);
}

// "a", "a or b", "a, b or c".
std::string one_of(std::initializer_list<std::string_view> names) {
    std::string out;
    std::size_t i = 0;
    for (std::string_view name : names) {
        if (i > 0) out += (i + 1 == names.size()) ? " or " : ", ";
        out += name;
        ++i;
    }
    return out;
}

std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string indexed(std::string_view key, std::size_t i) {
    return std::string(key) + "[" + std::to_string(i) + "]";
}

template <typename T>
struct Choice {
    std::string_view name;
    T value;
};

// The phases 2 and 3 over one decoded file. Each read_* function reads an
// optional key of a table: absent -> nullptr and <out> untouched (the
// default); present and valid -> <out> set and the value's node returned;
// present and invalid -> an error recorded and nullptr.
class Validator {
public:
    explicit Validator(std::string file) : file_(std::move(file)) {}

    LoadResult run(const Node& root);

private:
    void fail(Position at, const std::string& path, const std::string& message) {
        errors_.push_back(Error{file_, at.line, at.column, path.empty() ? message : path + ": " + message});
    }

    void missing(const Node& table, const std::string& path) {
        fail(table.position, path, "required key is missing");
    }

    // Unknown keys are errors, never ignored: a typo must not silently leave
    // a default in place.
    void check_keys(const Node& table, const std::string& path, std::initializer_list<std::string_view> known) {
        for (const toml_doc::Entry& entry : table.entries) {
            if (std::find(known.begin(), known.end(), entry.key) != known.end()) continue;
            fail(entry.key_position, join(path, entry.key),
                 "unknown key (expected " + one_of(known) + ")");
        }
    }

    const Node* typed(const Node& table, const std::string& path, std::string_view key, Kind kind,
                      std::string_view expected) {
        const Node* node = table.find(key);
        if (node == nullptr) return nullptr;
        if (node->kind != kind) {
            fail(node->position, join(path, key),
                 "expected " + std::string(expected) + ", got " + std::string(toml_doc::describe(node->kind)));
            return nullptr;
        }
        return node;
    }

    const Node* read_string(const Node& table, const std::string& path, std::string_view key, std::string& out) {
        const Node* node = typed(table, path, key, Kind::String, "a string");
        if (node != nullptr) out = node->string;
        return node;
    }

    // An integer in [<min>, <max>].
    template <typename T>
    const Node* read_integer(const Node& table, const std::string& path, std::string_view key, std::int64_t min,
                             std::int64_t max, T& out) {
        const Node* node = typed(table, path, key, Kind::Integer, "an integer");
        if (node == nullptr) return nullptr;
        const std::int64_t value = node->integer;
        if (value < min || value > max) {
            std::string expected;
            if (min == 1 && value < 1) {
                expected = "must be a positive integer";
            } else if (max == kMaxInt) {
                expected = min == 0 ? "must be a non-negative integer" : "must be at least " + std::to_string(min);
            } else {
                expected = "must be between " + std::to_string(min) + " and " + std::to_string(max);
            }
            fail(node->position, join(path, key), expected + ", got " + std::to_string(value));
            return nullptr;
        }
        out = static_cast<T>(value);
        return node;
    }

    const Node* read_duration(const Node& table, const std::string& path, std::string_view key, Duration& out) {
        static constexpr std::string_view kExpected =
            "a duration: a non-negative integer and a unit ms, s, m or h, as in \"30s\"";
        const Node* node = typed(table, path, key, Kind::String, kExpected);
        if (node == nullptr) return nullptr;
        if (!parse_duration(node->string, out)) {
            fail(node->position, join(path, key), "expected " + std::string(kExpected) + ", got " + quote(node->string));
            return nullptr;
        }
        return node;
    }

    template <typename T>
    const Node* read_choice(const Node& table, const std::string& path, std::string_view key,
                            std::initializer_list<Choice<T>> choices, T& out) {
        const Node* node = typed(table, path, key, Kind::String, "a string");
        if (node == nullptr) return nullptr;
        for (const Choice<T>& choice : choices) {
            if (node->string == choice.name) {
                out = choice.value;
                return node;
            }
        }
        std::string expected;
        std::size_t i = 0;
        for (const Choice<T>& choice : choices) {
            if (i > 0) expected += (i + 1 == choices.size()) ? " or " : ", ";
            expected += quote(choice.name);
            ++i;
        }
        fail(node->position, join(path, key), "expected " + expected + ", got " + quote(node->string));
        return nullptr;
    }

    const Node* read_bool(const Node& table, const std::string& path, std::string_view key, bool& out) {
        const Node* node = typed(table, path, key, Kind::Boolean, "true or false");
        if (node != nullptr) out = node->boolean;
        return node;
    }

    // An array of strings; a non-string element is reported and the whole
    // key rejected.
    const Node* read_string_list(const Node& table, const std::string& path, std::string_view key,
                                 std::vector<std::string>& out) {
        const Node* node = typed(table, path, key, Kind::Array, "an array of strings");
        if (node == nullptr) return nullptr;
        std::vector<std::string> values;
        for (std::size_t i = 0; i < node->items.size(); ++i) {
            const Node& item = node->items[i];
            if (item.kind != Kind::String) {
                fail(item.position, join(path, key) + "[" + std::to_string(i) + "]",
                     "expected a string, got " + std::string(toml_doc::describe(item.kind)));
                return nullptr;
            }
            values.push_back(item.string);
        }
        out = std::move(values);
        return node;
    }

    // A socket address to listen on or connect to: port 1..65535.
    const Node* read_address(const Node& table, const std::string& path, std::string_view key, SocketAddress& out) {
        const Node* node = typed(table, path, key, Kind::String, "a string \"IPv4:port\" or \"[IPv6]:port\"");
        if (node == nullptr) return nullptr;
        SocketAddress parsed;
        std::string_view problem = address_problem(node->string, parsed);
        if (problem.empty() && port_of(parsed) == 0) problem = "the port must be a number between 1 and 65535";
        if (!problem.empty()) {
            fail(node->position, join(path, key), std::string(problem) + ", got " + quote(node->string));
            return nullptr;
        }
        out = std::move(parsed);
        return node;
    }

    // A [section] table, or nullptr when absent or not a table.
    const Node* section(const Node& root, std::string_view key) {
        return typed(root, "", key, Kind::Table, "a table ([" + std::string(key) + "])");
    }

    // An array of tables ([[key]] or key = [{...}, ...]); elements that are
    // not tables are reported and skipped. The indices in paths stay those
    // of the file.
    std::vector<std::pair<std::size_t, const Node*>> tables(const Node& parent, const std::string& path,
                                                            std::string_view key, std::string_view header) {
        std::vector<std::pair<std::size_t, const Node*>> out;
        const Node* array = typed(parent, path, key, Kind::Array,
                                  "an array of tables ([[" + std::string(header) + "]])");
        if (array == nullptr) return out;
        for (std::size_t i = 0; i < array->items.size(); ++i) {
            const Node& item = array->items[i];
            if (item.kind != Kind::Table) {
                fail(item.position, join(path, indexed(key, i)),
                     "expected a table, got " + std::string(toml_doc::describe(item.kind)));
                continue;
            }
            out.emplace_back(i, &item);
        }
        return out;
    }

    // Reports an absent or empty array of tables <key> that must have at
    // least one element (<present> = how many tables it holds). Absent: no
    // position in the file (line 0) unless <parent> names a table to point at.
    void require_some(const Node& parent, const std::string& path, std::string_view key, std::string_view header,
                      std::size_t present) {
        const Node* node = parent.find(key);
        if (node != nullptr && node->kind != Kind::Array) return;  // reported as a type error
        if (node != nullptr && !node->items.empty()) return;       // its elements are checked one by one
        if (present > 0) return;
        const Position at = node != nullptr ? node->position : path.empty() ? Position{} : parent.position;
        fail(at, join(path, key), "at least one [[" + std::string(header) + "]] is required");
    }

    void server(const Node& root, ServerSection& out);
    void log(const Node& root, LogSection& out);
    void admin(const Node& root, AdminSection& out);
    void listeners(const Node& root, std::vector<Listener>& out);
    void timeouts(const Node& root, Timeouts& out);
    void heartbeat(const Node& root, Heartbeat& out);
    void limits(const Node& root, Limits& out);
    void pools(const Node& root, std::vector<Pool>& out);
    void listener_tls(const Node& table, const std::string& path, Listener& out);
    bool listener_tls_resumption(const Node& table, const std::string& path, tls::ServerSettings& out);
    void pool_tls(const Node& table, const std::string& path, bool needed, Pool& out);
    void route_auth(const Node& table, const std::string& path, Route& out);
    bool route_key_set(const Node& table, const std::string& path, RouteAuth& auth, jwt::Options& options);
    void health(const Node& pool, const std::string& path, HealthCheck& out);
    void routes(const Node& root, const std::vector<Pool>& pools, std::vector<Route>& out);
    void resolver(const Node& root, ResolverSection& out);
    bool backend_source(const Node& table, const std::string& path, const Backend& backend,
                        std::vector<BackendSource>& out);

    std::string file_;
    std::vector<Error> errors_;
    // Set when a [[pool]] was present but rejected: then a route naming it is
    // not reported as dangling too.
    std::vector<std::string> rejected_pools_;
};

void Validator::server(const Node& root, ServerSection& out) {
    const Node* table = section(root, "server");
    if (table == nullptr) return;
    const std::string path = "server";
    check_keys(*table, path, {"workers", "max_connections", "drain_timeout", "pid_file", "io"});
    read_integer(*table, path, "workers", 0, 256, out.workers);
    read_integer(*table, path, "max_connections", 1, kMaxInt, out.max_connections);
    read_duration(*table, path, "drain_timeout", out.drain_timeout);
    if (const Node* node = read_string(*table, path, "pid_file", out.pid_file); node && out.pid_file.empty()) {
        fail(node->position, join(path, "pid_file"), "expected a path, got \"\"");
    }
    read_choice<Io>(*table, path, "io", {{"epoll", Io::Epoll}, {"io_uring", Io::IoUring}}, out.io);
}

void Validator::log(const Node& root, LogSection& out) {
    const Node* table = section(root, "log");
    if (table == nullptr) return;
    const std::string path = "log";
    check_keys(*table, path, {"access", "format", "error", "level", "empty_connections"});
    read_string(*table, path, "access", out.access);
    read_bool(*table, path, "empty_connections", out.empty_connections);
    read_choice<LogFormat>(*table, path, "format", {{"json", LogFormat::Json}, {"text", LogFormat::Text}},
                           out.format);
    std::string error_log;
    if (const Node* node = read_string(*table, path, "error", error_log)) {
        if (error_log.empty()) {
            fail(node->position, join(path, "error"), "expected a path or \"-\" (stderr), got \"\"");
        } else {
            out.error = error_log;
        }
    }
    read_choice<LogLevel>(*table, path, "level",
                          {{"debug", LogLevel::Debug}, {"info", LogLevel::Info}, {"warn", LogLevel::Warn},
                           {"error", LogLevel::Error}},
                          out.level);
}

void Validator::admin(const Node& root, AdminSection& out) {
    const Node* table = section(root, "admin");
    if (table == nullptr) return;
    const std::string path = "admin";
    check_keys(*table, path, {"listen", "token"});
    if (const Node* node = read_string(*table, path, "token", out.token); node && out.token.empty()) {
        fail(node->position, join(path, "token"), "expected a non-empty secret (or no token key at all)");
    }
    if (table->find("listen") == nullptr) {
        missing(*table, join(path, "listen"));
        return;
    }
    SocketAddress address;
    if (read_address(*table, path, "listen", address)) out.listen = std::move(address);
}

void Validator::listeners(const Node& root, std::vector<Listener>& out) {
    const auto items = tables(root, "", "listener", "listener");
    std::vector<std::size_t> file_index;
    for (const auto& [i, table] : items) {
        const std::string path = indexed("listener", i);
        check_keys(*table, path, {"listen", "tls", "proxy_protocol", "trusted_proxies", "http2"});
        if (table->find("listen") == nullptr) {
            missing(*table, join(path, "listen"));
            continue;
        }
        Listener listener;
        read_bool(*table, path, "proxy_protocol", listener.proxy_protocol);
        std::vector<std::string> trusted;
        if (const Node* list = read_string_list(*table, path, "trusted_proxies", trusted)) {
            auto parsed = net::CidrSet::parse(trusted);
            if (auto* problem = std::get_if<std::string>(&parsed)) {
                fail(list->position, join(path, "trusted_proxies"), *problem);
            } else {
                listener.trusted_proxies = std::get<net::CidrSet>(std::move(parsed));
            }
        }
        // HTTP/2 is on by default where ALPN can offer it (TLS), and on
        // request on plain listeners (h2c with prior knowledge); read before
        // the TLS context, which offers "h2" only when it is on.
        listener.http2 = table->find("tls") != nullptr;
        read_bool(*table, path, "http2", listener.http2);
        // With proxy_protocol too, the cleartext PROXY header precedes the
        // TLS handshake (runtime::Session reads it before starting TLS).
        listener_tls(*table, path, listener);
        const Node* node = read_address(*table, path, "listen", listener.listen);
        if (node == nullptr) continue;
        for (std::size_t j = 0; j < out.size(); ++j) {
            if (out[j].listen.text == listener.listen.text) {
                fail(node->position, join(path, "listen"),
                     "duplicate of " + indexed("listener", file_index[j]) + ".listen " +
                         quote(listener.listen.text));
                node = nullptr;
                break;
            }
        }
        if (node == nullptr) continue;
        file_index.push_back(i);
        out.push_back(std::move(listener));
    }
    require_some(root, "", "listener", "listener", items.size());
}

void Validator::timeouts(const Node& root, Timeouts& out) {
    const Node* table = section(root, "timeouts");
    if (table == nullptr) return;
    const std::string path = "timeouts";
    check_keys(*table, path, {"handshake", "connect", "idle", "keepalive", "response"});
    // A zero handshake, connect or response timeout would fail every session;
    // only the idle and keep-alive timeouts may be switched off.
    for (auto [key, field] : {std::pair{"handshake", &out.handshake}, std::pair{"connect", &out.connect},
                              std::pair{"response", &out.response}}) {
        Duration value{};
        if (const Node* node = read_duration(*table, path, key, value)) {
            if (value.count() == 0) {
                fail(node->position, join(path, key), "must be greater than 0s, got " + quote(node->string));
            } else {
                *field = value;
            }
        }
    }
    read_duration(*table, path, "idle", out.idle);
    read_duration(*table, path, "keepalive", out.keepalive);
}

void Validator::heartbeat(const Node& root, Heartbeat& out) {
    const Node* table = section(root, "heartbeat");
    if (table == nullptr) return;
    const std::string path = "heartbeat";
    check_keys(*table, path, {"interval", "timeout", "peers"});
    read_duration(*table, path, "interval", out.interval);
    const Node* timeout = read_duration(*table, path, "timeout", out.timeout);
    read_choice<HeartbeatPeers>(
        *table, path, "peers",
        {{"client", HeartbeatPeers::Client}, {"backend", HeartbeatPeers::Backend}, {"both", HeartbeatPeers::Both}},
        out.peers);
    // The default timeout is not zero, so a zero one was written: <timeout> is set.
    if (out.interval.count() > 0 && out.timeout.count() == 0 && timeout != nullptr) {
        fail(timeout->position, join(path, "timeout"),
             "must be greater than 0s when heartbeat.interval is not 0s, got " + quote(timeout->string));
    }
}

void Validator::limits(const Node& root, Limits& out) {
    const Node* table = section(root, "limits");
    if (table == nullptr) return;
    const std::string path = "limits";
    check_keys(*table, path, {"max_header_bytes", "max_message_bytes", "max_connections_per_ip", "buffer_bytes",
                              "handshakes_per_ip", "handshake_burst", "h2_max_concurrent_streams",
                              "h2_stream_window_bytes", "h2_connection_window_bytes"});
    if (const Node* rate = table->find("handshakes_per_ip")) {
        const std::string key = join(path, "handshakes_per_ip");
        if (rate->kind != Kind::Float && rate->kind != Kind::Integer) {
            fail(rate->position, key, "expected a number, got " + std::string(toml_doc::describe(rate->kind)));
        } else {
            const double value = rate->kind == Kind::Float ? rate->floating : static_cast<double>(rate->integer);
            if (!std::isfinite(value) || value < 0) {
                fail(rate->position, key, "must be 0 (off) or a positive number, got " + format_double(value));
            } else {
                out.handshakes_per_ip = value;
            }
        }
    }
    read_integer(*table, path, "handshake_burst", 0, 1000000, out.handshake_burst);
    read_integer(*table, path, "max_header_bytes", 1024, 1024 * 1024, out.max_header_bytes);
    read_integer(*table, path, "max_message_bytes", 0, kMaxInt, out.max_message_bytes);
    read_integer(*table, path, "max_connections_per_ip", 0, kMaxInt, out.max_connections_per_ip);
    read_integer(*table, path, "buffer_bytes", 4096, kMaxInt, out.buffer_bytes);
    read_integer(*table, path, "h2_max_concurrent_streams", 1, 10000, out.h2_max_concurrent_streams);
    // RFC 9113 §6.9.1: a window is at least the initial 65535 and at most 2^31-1.
    read_integer(*table, path, "h2_stream_window_bytes", 65535, 2147483647, out.h2_stream_window_bytes);
    read_integer(*table, path, "h2_connection_window_bytes", 65535, 2147483647, out.h2_connection_window_bytes);
}

void Validator::pools(const Node& root, std::vector<Pool>& out) {
    const auto items = tables(root, "", "pool", "pool");
    std::vector<std::size_t> file_index;
    for (const auto& [i, table] : items) {
        const std::string path = indexed("pool", i);
        const std::size_t errors_before = errors_.size();
        check_keys(*table, path,
                   {"name", "hash", "algorithm", "balance_factor", "maglev_table_size", "health", "tls",
                    "sticky_cookie", "backend"});
        Pool pool;
        health(*table, join(path, "health"), pool.health);
        // Maglev's permutation needs a prime table size (NSDI 2016 §3.4).
        if (const Node* size = read_integer(*table, path, "maglev_table_size", 251, 16777259, pool.maglev_table_size)) {
            bool prime = pool.maglev_table_size % 2 != 0;
            for (std::uint64_t d = 3; prime && d * d <= pool.maglev_table_size; d += 2) prime = pool.maglev_table_size % d != 0;
            if (!prime) {
                fail(size->position, join(path, "maglev_table_size"),
                     "must be a prime number (e.g. 65537, 131071, 655373), got " + std::to_string(pool.maglev_table_size));
            }
        }

        const Node* name = read_string(*table, path, "name", pool.name);
        if (table->find("name") == nullptr) {
            missing(*table, join(path, "name"));
        } else if (name != nullptr && pool.name.empty()) {
            fail(name->position, join(path, "name"), "must not be empty");
        } else if (name != nullptr) {
            for (std::size_t j = 0; j < out.size(); ++j) {
                if (out[j].name == pool.name) {
                    fail(name->position, join(path, "name"),
                         "duplicate pool name " + quote(pool.name) + " (first defined by " +
                             indexed("pool", file_index[j]) + ")");
                }
            }
        }

        if (const Node* hash = typed(*table, path, "hash", Kind::String, "a string")) {
            if (!chash::parse_key_spec(hash->string, pool.hash)) {
                fail(hash->position, join(path, "hash"),
                     "expected \"ip\", \"path\", \"header:NAME\", \"cookie:NAME\", \"query:NAME\" or \"claim:NAME\", got " +
                         quote(hash->string));
            }
        }
        read_choice<chash::Algorithm>(*table, path, "algorithm",
                                      {{"ring", chash::Algorithm::Ring}, {"maglev", chash::Algorithm::Maglev}},
                                      pool.algorithm);

        if (const Node* factor = table->find("balance_factor")) {
            const std::string key = join(path, "balance_factor");
            if (factor->kind != Kind::Float && factor->kind != Kind::Integer) {
                fail(factor->position, key, "expected a number, got " + std::string(toml_doc::describe(factor->kind)));
            } else {
                const double value =
                    factor->kind == Kind::Float ? factor->floating : static_cast<double>(factor->integer);
                // Bounded loads need c > 1 (Mirrokni et al.): at c <= 1 no
                // back end could ever take a session.
                if (!std::isfinite(value) || !(value == 0.0 || value > 1.0)) {
                    fail(factor->position, key, "must be 0 (off) or greater than 1.0, got " + format_double(value));
                } else {
                    pool.balance_factor = value;
                }
            }
        }

        if (const Node* cookie = read_string(*table, path, "sticky_cookie", pool.sticky_cookie)) {
            // Empty means off; anything else must be a cookie-name (RFC 6265 §4.1.1).
            if (!pool.sticky_cookie.empty() && !sticky::valid_cookie_name(pool.sticky_cookie)) {
                fail(cookie->position, join(path, "sticky_cookie"),
                     "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~), got " + quote(cookie->string));
            }
        }

        const auto backends = tables(*table, path, "backend", "pool.backend");
        std::vector<std::size_t> backend_index;
        for (const auto& [b, backend_table] : backends) {
            const std::string backend_path = join(path, indexed("backend", b));
            check_keys(*backend_table, backend_path, {"address", "weight", "id", "tls", "srv"});
            Backend backend;
            read_bool(*backend_table, backend_path, "tls", backend.tls);
            // HAProxy bounds server weights to 256 too; with 160 ring points
            // per unit of weight that keeps a ring of a few back ends small.
            read_integer(*backend_table, backend_path, "weight", 1, 256, backend.weight);
            if (backend_source(*backend_table, backend_path, backend, pool.sources)) continue;
            const Node* address = read_address(*backend_table, backend_path, "address", backend.address);
            if (backend_table->find("address") == nullptr) missing(*backend_table, join(backend_path, "address"));
            const Node* id = read_string(*backend_table, backend_path, "id", backend.id);
            if (address == nullptr) continue;
            if (backend.id.empty()) backend.id = backend.address.text;
            const bool explicit_id = id != nullptr && !id->string.empty();
            for (std::size_t j = 0; j < pool.backends.size(); ++j) {
                if (pool.backends[j].id == backend.id) {
                    fail(explicit_id ? id->position : address->position,
                         join(backend_path, explicit_id ? "id" : "address"),
                         "duplicate backend id " + quote(backend.id) + " in pool (first used by " +
                             indexed("backend", backend_index[j]) + ")");
                    address = nullptr;
                    break;
                }
            }
            if (address == nullptr) continue;
            backend_index.push_back(b);
            pool.backends.push_back(std::move(backend));
        }
        require_some(*table, path, "backend", "pool.backend", backends.size());
        pool_tls(*table, path,
                 std::any_of(pool.backends.begin(), pool.backends.end(), [](const Backend& b) { return b.tls; }) ||
                     std::any_of(pool.sources.begin(), pool.sources.end(),
                                 [](const BackendSource& b) { return b.tls; }),
                 pool);

        if (errors_.size() != errors_before) {
            if (name != nullptr) rejected_pools_.push_back(pool.name);
            continue;
        }
        file_index.push_back(i);
        out.push_back(std::move(pool));
    }
    require_some(root, "", "pool", "pool", items.size());
}

// [resolver]: how DNS-discovered back ends are re-resolved.
void Validator::resolver(const Node& root, ResolverSection& out) {
    const Node* table = section(root, "resolver");
    if (table == nullptr) return;
    const std::string path = "resolver";
    check_keys(*table, path, {"servers", "interval", "timeout", "hold"});
    std::vector<std::string> servers;
    if (const Node* list = read_string_list(*table, path, "servers", servers)) {
        for (std::size_t i = 0; i < servers.size(); ++i) {
            SocketAddress server;
            std::string_view problem = address_problem(servers[i], server);
            if (problem.empty() && port_of(server) == 0) problem = "the port must be a number between 1 and 65535";
            if (!problem.empty()) {
                fail(list->items[i].position, "resolver.servers[" + std::to_string(i) + "]",
                     std::string(problem) + ", got " + quote(servers[i]));
            } else {
                out.servers.push_back(std::move(server));
            }
        }
    }
    if (const Node* interval = read_duration(*table, path, "interval", out.interval)) {
        if (out.interval.count() < discovery::kMinIntervalMs) {
            fail(interval->position, "resolver.interval", "must be at least \"100ms\", got " + quote(interval->string));
        }
    }
    if (const Node* timeout = read_duration(*table, path, "timeout", out.timeout)) {
        if (out.timeout.count() == 0) fail(timeout->position, "resolver.timeout", "must be greater than zero");
    }
    read_duration(*table, path, "hold", out.hold);
}

// A [[pool.backend]] discovered through DNS: `srv = "NAME"`, or an `address`
// whose host is a name. Returns false for a numeric address (the caller reads
// it); true when the table was handled here, valid or not.
bool Validator::backend_source(const Node& table, const std::string& path, const Backend& backend,
                               std::vector<BackendSource>& out) {
    const Node* srv = table.find("srv");
    const Node* address = table.find("address");
    BackendSource source;
    source.tls = backend.tls;
    source.weight = backend.weight;
    const Node* written = nullptr;
    if (srv != nullptr) {
        written = read_string(table, path, "srv", source.name);
        if (written == nullptr) return true;
        if (const std::string_view problem = discovery::name_problem(source.name); !problem.empty()) {
            fail(srv->position, join(path, "srv"), std::string(problem) + ", got " + quote(source.name));
            return true;
        }
        if (address != nullptr) {
            fail(address->position, join(path, "address"), "cannot be combined with srv (the SRV records name the members)");
            return true;
        }
        if (const Node* weight = table.find("weight")) {
            fail(weight->position, join(path, "weight"), "cannot be combined with srv (the SRV records' weights are used)");
            return true;
        }
        source.srv = true;
    } else {
        // A host part with a letter and no "[" is a name; anything else is
        // read as a numeric address, with that reader's errors.
        if (address == nullptr || address->kind != Kind::String) return false;
        const std::string_view text = address->string;
        const std::string_view host = text.substr(0, text.rfind(':'));
        if (host.empty() || host.front() == '[' ||
            std::none_of(host.begin(), host.end(), [](char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; })) {
            return false;
        }
        written = address;
        if (const std::string_view problem = discovery::named_address_problem(text, source.name, source.port);
            !problem.empty()) {
            fail(address->position, join(path, "address"), std::string(problem) + ", got " + quote(text));
            return true;
        }
    }
    source.text = written->string;
    if (const Node* id = table.find("id")) {
        fail(id->position, join(path, "id"),
             "cannot be combined with a host name or srv (each discovered member's id is its \"IP:port\")");
        return true;
    }
    for (const BackendSource& other : out) {
        if (other.srv == source.srv && other.text == source.text) {
            fail(written->position, join(path, srv != nullptr ? "srv" : "address"),
                 "duplicate " + quote(source.text) + " in pool");
            return true;
        }
    }
    out.push_back(std::move(source));
    return true;
}

void Validator::health(const Node& pool, const std::string& path, HealthCheck& out) {
    const Node* table = typed(pool, path.substr(0, path.rfind('.')), "health", Kind::Table, "a table ([pool.health])");
    if (table == nullptr) return;
    check_keys(*table, path, {"type", "path", "interval", "timeout", "rise", "fall", "cooldown"});
    read_choice<HealthType>(*table, path, "type",
                            {{"tcp", HealthType::Tcp}, {"http", HealthType::Http}, {"websocket", HealthType::Websocket}},
                            out.type);
    if (const Node* probe_path = read_string(*table, path, "path", out.path)) {
        if (out.path.empty() || out.path.front() != '/') {
            fail(probe_path->position, join(path, "path"), "must start with \"/\", got " + quote(probe_path->string));
        }
    }
    for (auto [key, field] : {std::pair{"interval", &out.interval}, std::pair{"timeout", &out.timeout},
                              std::pair{"cooldown", &out.cooldown}}) {
        Duration value{};
        if (const Node* node = read_duration(*table, path, key, value)) {
            if (value.count() == 0) {
                fail(node->position, join(path, key), "must be greater than 0s, got " + quote(node->string));
            } else {
                *field = value;
            }
        }
    }
    read_integer(*table, path, "rise", 1, 1000, out.rise);
    read_integer(*table, path, "fall", 1, 1000, out.fall);
}

void Validator::listener_tls(const Node& listener, const std::string& listener_path, Listener& out) {
    const Node* table = typed(listener, listener_path, "tls", Kind::Table, "a table ([listener.tls])");
    if (table == nullptr) return;
    const std::string path = join(listener_path, "tls");
    check_keys(*table, path,
               {"cert", "key", "min_version", "sni", "ciphers", "ciphersuites", "groups", "ticket_key_file",
                "session_cache", "session_timeout"});
    tls::ServerSettings settings;
    settings.http2 = out.http2;
    bool ok = true;
    for (auto [key, field] : {std::pair{"cert", &settings.main.cert}, std::pair{"key", &settings.main.key}}) {
        if (table->find(key) == nullptr) {
            missing(*table, join(path, key));
            ok = false;
        } else if (read_string(*table, path, key, *field) == nullptr) {
            ok = false;
        }
    }
    std::string version = "1.2";
    if (const Node* node = read_string(*table, path, "min_version", version)) {
        if (version == "1.2") {
            settings.min_version = TLS1_2_VERSION;
        } else if (version == "1.3") {
            settings.min_version = TLS1_3_VERSION;
        } else {
            fail(node->position, join(path, "min_version"), "expected \"1.2\" or \"1.3\", got " + quote(version));
            ok = false;
        }
    }
    if (!listener_tls_resumption(*table, path, settings)) ok = false;
    for (const auto& [i, entry] : tables(*table, path, "sni", "listener.tls.sni")) {
        const std::string entry_path = join(path, indexed("sni", i));
        check_keys(*entry, entry_path, {"server_name", "cert", "key"});
        tls::SniEntry sni;
        for (auto [key, field] : {std::pair{"server_name", &sni.server_name}, std::pair{"cert", &sni.pair.cert},
                                  std::pair{"key", &sni.pair.key}}) {
            if (entry->find(key) == nullptr) {
                missing(*entry, join(entry_path, key));
                ok = false;
            } else if (read_string(*entry, entry_path, key, *field) == nullptr) {
                ok = false;
            }
        }
        settings.sni.push_back(std::move(sni));
    }
    if (!ok) return;
    auto context = tls::ServerContext::create(settings);
    if (auto* problem = std::get_if<std::string>(&context)) {
        fail(table->position, path, *problem);
        return;
    }
    out.tls = std::get<std::shared_ptr<const tls::ServerContext>>(std::move(context));
}

// The cipher profile and resumption keys of [listener.tls]; false after an error.
bool Validator::listener_tls_resumption(const Node& table, const std::string& path, tls::ServerSettings& out) {
    const std::size_t errors = errors_.size();
    using Check = std::string (*)(const std::string&);
    for (auto [key, field, check] : {std::tuple{"ciphers", &out.ciphers, Check{&tls::check_ciphers}},
                                     std::tuple{"ciphersuites", &out.ciphersuites, Check{&tls::check_ciphersuites}},
                                     std::tuple{"groups", &out.groups, Check{&tls::check_groups}}}) {
        if (const Node* node = read_string(table, path, key, *field)) {
            std::string problem = check(*field);
            if (!problem.empty()) fail(node->position, join(path, key), problem);
        }
    }
    if (const Node* node = read_string(table, path, "ticket_key_file", out.ticket_key_file)) {
        auto key = tls::read_ticket_key_file(out.ticket_key_file);
        if (auto* problem = std::get_if<std::string>(&key)) {
            fail(node->position, join(path, "ticket_key_file"), *problem);
        } else {
            out.ticket_key = std::get<tls::TicketKey>(key);
        }
    }
    read_integer(table, path, "session_cache", 0, 10000000, out.session_cache);
    Duration timeout{};
    if (const Node* node = read_duration(table, path, "session_timeout", timeout)) {
        // RFC 8446 §4.6.1: a ticket lifetime of at most 7 days; the key ring
        // keeps a generated key one rotation per hour of it, so one day.
        if (timeout < std::chrono::seconds(1) || timeout > std::chrono::hours(24)) {
            fail(node->position, join(path, "session_timeout"),
                 "must be between 1s and 24h, got " + quote(node->string));
        } else {
            out.session_timeout = std::chrono::duration_cast<std::chrono::seconds>(timeout);
        }
    }
    return errors_.size() == errors;
}

void Validator::pool_tls(const Node& pool, const std::string& pool_path, bool needed, Pool& out) {
    const Node* table = typed(pool, pool_path, "tls", Kind::Table, "a table ([pool.tls])");
    if (table == nullptr && pool.find("tls") != nullptr) return;
    tls::ClientSettings settings;
    const std::string path = join(pool_path, "tls");
    if (table != nullptr) {
        check_keys(*table, path, {"ca", "verify", "server_name"});
        if (!read_string(*table, path, "ca", settings.ca) && table->find("ca")) return;
        if (!read_bool(*table, path, "verify", settings.verify) && table->find("verify")) return;
        if (!read_string(*table, path, "server_name", settings.server_name) && table->find("server_name")) return;
    }
    if (!needed) return;
    auto context = tls::ClientContext::create(settings);
    if (auto* problem = std::get_if<std::string>(&context)) {
        fail(table != nullptr ? table->position : pool.position, path, *problem);
        return;
    }
    out.tls = std::get<std::shared_ptr<const tls::ClientContext>>(std::move(context));
}

void Validator::route_auth(const Node& route, const std::string& route_path, Route& out) {
    const Node* table = typed(route, route_path, "auth", Kind::Table, "a table ([route.auth])");
    if (table == nullptr) return;
    const std::string path = join(route_path, "auth");
    check_keys(*table, path,
               {"algorithm", "key_file", "issuer", "audience", "leeway", "token_from", "forward_claims", "jwks_file",
                "jwks_url", "jwks_refresh", "algorithms", "tls_ca", "close_on_expiry", "max_sessions_per_subject"});
    jwt::Options options;
    bool ok = true;
    // A route has either a key file or a JWK Set (a file or a URL): a
    // second source is reported at its own key, naming the first.
    const Node* key_at = table->find("key_file");
    const Node* jwks_file_at = table->find("jwks_file");
    const Node* jwks_url_at = table->find("jwks_url");
    const bool key_sets = jwks_file_at != nullptr || jwks_url_at != nullptr;
    bool conflict = false;
    {
        std::vector<std::pair<const char*, const Node*>> given;
        for (auto [name, node] : {std::pair{"key_file", key_at}, {"jwks_file", jwks_file_at}, {"jwks_url", jwks_url_at}})
            if (node != nullptr) given.emplace_back(name, node);
        for (std::size_t i = 1; i < given.size(); ++i) {
            fail(given[i].second->position, join(path, given[i].first),
                 "conflicts with " + std::string(given[0].first) + " at line " +
                     std::to_string(given[0].second->position.line) +
                     ": a route has either a key_file or a JWK Set (jwks_file or jwks_url)");
            ok = false;
            conflict = true;
        }
        if (given.empty()) {
            fail(table->position, join(path, "key_file"), "required key is missing (or jwks_file, or jwks_url)");
            ok = false;
        }
    }
    // Keys of the other kind of route are errors, not silently ignored
    // (after a conflict, which kind was meant is unknown: not reported).
    auto only_with = [&](const char* key, bool allowed, const char* why) {
        if (const Node* node = table->find(key); node != nullptr && !allowed && !conflict) {
            fail(node->position, join(path, key), why);
            ok = false;
        }
    };
    only_with("algorithm", !key_sets, "applies to key_file; with a JWK Set, list algorithms = [...]");
    only_with("algorithms", key_sets || key_at == nullptr, "applies to a JWK Set (jwks_file or jwks_url); key_file takes algorithm");
    only_with("jwks_refresh", jwks_url_at != nullptr || !key_sets, "applies to jwks_url only");
    only_with("tls_ca", jwks_url_at != nullptr || !key_sets, "applies to jwks_url only");
    if (!key_sets && key_at != nullptr) {
        if (table->find("algorithm") == nullptr) {
            missing(*table, join(path, "algorithm"));
            ok = false;
        } else if (!read_choice<jwt::Algorithm>(*table, path, "algorithm",
                                                {{"HS256", jwt::Algorithm::HS256},
                                                 {"RS256", jwt::Algorithm::RS256},
                                                 {"ES256", jwt::Algorithm::ES256}},
                                                options.algorithm)) {
            ok = false;
        }
    }
    std::string key_file;
    const Node* key_node = key_at != nullptr ? read_string(*table, path, "key_file", key_file) : nullptr;
    if (key_at != nullptr && key_node == nullptr) {
        ok = false;
    } else if (key_node != nullptr && !key_sets) {
        if (const int error = read_whole_file(key_file, options.key); error != 0) {
            fail(key_node->position, join(path, "key_file"), "cannot read " + quote(key_file) + ": " + std::strerror(error));
            ok = false;
        }
    }
    std::string text;
    if (read_string(*table, path, "issuer", text)) options.issuer = text;
    if (read_string(*table, path, "audience", text)) options.audience = text;
    Duration leeway{};
    if (read_duration(*table, path, "leeway", leeway)) options.leeway_seconds = leeway.count() / 1000;
    RouteAuth auth;
    {
        const Node* host = route.find("host");
        const Node* prefix = route.find("path_prefix");
        auth.label = (host && host->kind == Kind::String ? host->string : "") +
                     (prefix && prefix->kind == Kind::String ? prefix->string : "/");
    }
    read_bool(*table, path, "close_on_expiry", auth.close_on_expiry);
    read_integer(*table, path, "max_sessions_per_subject", 0, kMaxInt, auth.max_sessions_per_subject);
    if (const Node* from = read_string(*table, path, "token_from", text)) {
        if (text == "header") {
            auth.token_from = TokenSource::Header;
        } else if (text.rfind("cookie:", 0) == 0 && text.size() > 7) {
            auth.token_from = TokenSource::Cookie;
            auth.token_name = text.substr(7);
        } else if (text.rfind("query:", 0) == 0 && text.size() > 6) {
            auth.token_from = TokenSource::Query;
            auth.token_name = text.substr(6);
        } else {
            fail(from->position, join(path, "token_from"),
                 "expected \"header\", \"cookie:NAME\" or \"query:NAME\", got " + quote(text));
            ok = false;
        }
    }
    read_string_list(*table, path, "forward_claims", auth.forward_claims);
    if (key_sets && ok) ok = route_key_set(*table, path, auth, options);
    if (!ok) return;
    if (key_sets) {
        auto verifier = jwt::Verifier::create_for_key_sets(options);
        if (auto* problem = std::get_if<std::string>(&verifier)) {
            fail(table->position, join(path, "algorithms"), *problem);
            return;
        }
        auth.verifier = std::make_shared<const jwt::Verifier>(std::get<jwt::Verifier>(std::move(verifier)));
        out.auth = std::move(auth);
        return;
    }
    auto verifier = jwt::Verifier::create(options);
    if (auto* problem = std::get_if<std::string>(&verifier)) {
        fail(key_node->position, join(path, "key_file"), *problem);
        return;
    }
    auth.verifier = std::make_shared<const jwt::Verifier>(std::get<jwt::Verifier>(std::move(verifier)));
    out.auth = std::move(auth);
}

// The JWK Set keys of [route.auth]: algorithms, jwks_file (read now, so
// that -t checks it), or jwks_url + jwks_refresh + tls_ca. Fills
// <options>.algorithms and <auth>.keys; false after reporting an error.
bool Validator::route_key_set(const Node& table, const std::string& path, RouteAuth& auth, jwt::Options& options) {
    bool ok = true;
    options.algorithms = {jwt::Algorithm::RS256, jwt::Algorithm::RS384, jwt::Algorithm::RS512,
                          jwt::Algorithm::PS256, jwt::Algorithm::ES256, jwt::Algorithm::ES384};
    std::vector<std::string> names;
    if (const Node* list = read_string_list(table, path, "algorithms", names)) {
        options.algorithms.clear();
        for (std::size_t i = 0; i < names.size(); ++i) {
            const std::string at = join(path, "algorithms") + "[" + std::to_string(i) + "]";
            auto algorithm = jwt::algorithm_from_string(names[i]);
            if (names[i] == "none") {
                fail(list->items[i].position, at, "\"none\" (unsigned tokens) is never accepted");
                ok = false;
            } else if (algorithm == jwt::Algorithm::HS256 || names[i].rfind("HS", 0) == 0) {
                fail(list->items[i].position, at,
                     quote(names[i]) + " needs a shared secret and is never used with a JWK Set (use key_file)");
                ok = false;
            } else if (!algorithm) {
                fail(list->items[i].position, at,
                     "expected \"RS256\", \"RS384\", \"RS512\", \"PS256\", \"ES256\" or \"ES384\", got " + quote(names[i]));
                ok = false;
            } else {
                options.algorithms.push_back(*algorithm);
            }
        }
        if (ok && options.algorithms.empty()) {
            fail(list->position, join(path, "algorithms"), "must name at least one algorithm");
            ok = false;
        }
    } else if (table.find("algorithms") != nullptr) {
        ok = false;
    }
    jwks::Source::Origin origin;
    origin.route = auth.label;
    std::shared_ptr<const jwks::KeySet> loaded;
    jwks::FileStamp stamp;
    if (const Node* node = read_string(table, path, "jwks_file", origin.file)) {
        auto file = jwks::load_file(origin.file);
        if (auto* problem = std::get_if<std::string>(&file)) {
            fail(node->position, join(path, "jwks_file"), *problem);
            ok = false;
        } else {
            auto& result = std::get<jwks::LoadedFile>(file);
            stamp = result.stamp;
            loaded = std::make_shared<const jwks::KeySet>(std::move(result.set));
        }
    } else if (table.find("jwks_file") != nullptr) {
        ok = false;
    }
    if (const Node* node = read_string(table, path, "jwks_url", origin.url)) {
        if (auto https = jwks::parse_https_url(origin.url)) {
            origin.https = std::move(*https);
        } else {
            fail(node->position, join(path, "jwks_url"),
                 "expected an https:// URL (https://HOST[:PORT]/PATH), got " + quote(origin.url));
            ok = false;
        }
        Duration refresh = std::chrono::minutes(5);
        if (const Node* at = read_duration(table, path, "jwks_refresh", refresh)) {
            if (refresh < std::chrono::seconds(1)) {
                fail(at->position, join(path, "jwks_refresh"), "must be at least \"1s\", got " + quote(at->string));
                ok = false;
            }
        } else if (table.find("jwks_refresh") != nullptr) {
            ok = false;
        }
        origin.refresh_ms = refresh.count();
        tls::ClientSettings settings;
        const Node* ca = read_string(table, path, "tls_ca", settings.ca);
        if (ca == nullptr && table.find("tls_ca") != nullptr) ok = false;
        // An IP literal is verified as an IP SAN, a name as a DNS SAN.
        SocketAddress ignored;
        const std::string with_port =
            (origin.https.host.find(':') != std::string::npos ? "[" + origin.https.host + "]" : origin.https.host) + ":1";
        if (!address_problem(with_port, ignored).empty()) settings.server_name = origin.https.host;
        if (ok) {
            auto context = tls::ClientContext::create(settings);
            if (auto* problem = std::get_if<std::string>(&context)) {
                fail(ca != nullptr ? ca->position : node->position, join(path, ca != nullptr ? "tls_ca" : "jwks_url"),
                     *problem);
                ok = false;
            } else {
                origin.tls = std::get<std::shared_ptr<const tls::ClientContext>>(std::move(context));
            }
        }
    }
    if (!ok) return false;
    auth.keys = std::make_shared<jwks::Source>(std::move(origin));
    if (loaded) {
        auth.keys->stamp = stamp;
        auth.keys->publish(std::move(loaded));
    }
    return true;
}

// A route host: "" (any), a name or numeric address, or "*.domain"; stored
// lowercase, without a port (ports are stripped from the request's Host).
std::string_view host_problem(std::string_view host) {
    if (host.empty()) return {};
    std::string_view name = host;
    if (name.size() > 2 && name[0] == '*' && name[1] == '.') name.remove_prefix(2);
    if (!name.empty() && name.front() == '[') {
        SocketAddress ignored;
        const std::string with_port = std::string(name) + ":1";
        if (name.back() != ']' || !address_problem(with_port, ignored).empty()) {
            return "expected a host name, \"*.domain\" or a numeric address (without a port)";
        }
        return {};
    }
    const bool valid = !name.empty() && name.front() != '.' && name.back() != '.' &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                                  c == '-' || c == '.' || c == '_';
                       });
    return valid ? std::string_view{} : "expected a host name, \"*.domain\" or a numeric address (without a port)";
}

void Validator::routes(const Node& root, const std::vector<Pool>& pools, std::vector<Route>& out) {
    const auto items = tables(root, "", "route", "route");
    std::vector<std::size_t> file_index;
    for (const auto& [i, table] : items) {
        const std::string path = indexed("route", i);
        check_keys(*table, path, {"path_prefix", "host", "pool", "allowed_origins", "auth"});
        Route route;
        bool ok = true;
        if (const Node* origins = read_string_list(*table, path, "allowed_origins", route.allowed_origins)) {
            for (std::size_t o = 0; o < route.allowed_origins.size(); ++o) {
                const std::string& origin = route.allowed_origins[o];
                if (origin.find("://") == std::string::npos || origin.back() == '/') {
                    fail(origins->items[o].position, join(path, "allowed_origins") + "[" + std::to_string(o) + "]",
                         "expected an origin like \"https://app.example.com\" (scheme, host, optional port, no path), got " +
                             quote(origin));
                    ok = false;
                }
            }
        }
        route_auth(*table, path, route);
        if (const Node* prefix = read_string(*table, path, "path_prefix", route.path_prefix)) {
            if (route.path_prefix.empty() || route.path_prefix.front() != '/') {
                fail(prefix->position, join(path, "path_prefix"), "must start with \"/\", got " + quote(prefix->string));
                ok = false;
            }
        } else if (table->find("path_prefix") != nullptr) {
            ok = false;
        }
        if (const Node* host = read_string(*table, path, "host", route.host)) {
            const std::string_view problem = host_problem(route.host);
            if (!problem.empty()) {
                fail(host->position, join(path, "host"), std::string(problem) + ", got " + quote(host->string));
                ok = false;
            }
            route.host = lowercase(route.host);
        } else if (table->find("host") != nullptr) {
            ok = false;
        }
        const Node* pool = read_string(*table, path, "pool", route.pool);
        if (table->find("pool") == nullptr) {
            missing(*table, join(path, "pool"));
            ok = false;
        } else if (pool == nullptr) {
            ok = false;
        } else {
            const auto found = std::find_if(pools.begin(), pools.end(),
                                            [&](const Pool& p) { return p.name == route.pool; });
            if (found != pools.end()) {
                route.pool_index = static_cast<std::size_t>(found - pools.begin());
            } else {
                ok = false;
                // A pool that exists but has errors of its own is not unknown.
                if (std::find(rejected_pools_.begin(), rejected_pools_.end(), route.pool) == rejected_pools_.end()) {
                    fail(pool->position, join(path, "pool"), "unknown pool " + quote(route.pool));
                }
            }
        }
        if (!ok) continue;
        bool duplicate = false;
        for (std::size_t j = 0; j < out.size() && !duplicate; ++j) {
            if (out[j].host == route.host && out[j].path_prefix == route.path_prefix) {
                fail(table->position, path,
                     "same host and path_prefix as " + indexed("route", file_index[j]) + " (" +
                         quote(route.host) + ", " + quote(route.path_prefix) + ")");
                duplicate = true;
            }
        }
        if (duplicate) continue;
        file_index.push_back(i);
        out.push_back(std::move(route));
    }
}

LoadResult Validator::run(const Node& root) {
    auto config = std::make_shared<Config>();
    config->source_path = file_;
    check_keys(root, "",
               {"server", "log", "admin", "listener", "timeouts", "heartbeat", "limits", "route", "pool", "resolver"});
    server(root, config->server);
    log(root, config->log);
    admin(root, config->admin);
    listeners(root, config->listeners);
    timeouts(root, config->timeouts);
    heartbeat(root, config->heartbeat);
    limits(root, config->limits);
    pools(root, config->pools);
    resolver(root, config->resolver);

    if (config->admin.listen) {
        for (std::size_t i = 0; i < config->listeners.size(); ++i) {
            if (config->listeners[i].listen.text == config->admin.listen->text) {
                fail(root.find("admin")->find("listen")->position, "admin.listen",
                     "same address as a [[listener]] " + quote(config->admin.listen->text));
            }
        }
    }

    const Node* route_array = root.find("route");
    if (route_array == nullptr) {
        // No [[route]] at all: a file with a single pool routes everything to
        // it (the implicit route "/" -> that pool); several pools are ambiguous.
        const Node* pool_array = root.find("pool");
        const std::size_t pools_written =
            pool_array != nullptr && pool_array->kind == Kind::Array ? pool_array->items.size() : 0;
        if (pools_written == 1 && config->pools.size() == 1) {
            config->routes.push_back(Route{"/", "", config->pools[0].name, 0, {}, std::nullopt});
        } else if (pools_written > 1) {
            fail(Position{}, "route", "at least one [[route]] is required when there are several pools");
        }
    } else {
        routes(root, config->pools, config->routes);
        const auto written = route_array->kind == Kind::Array ? route_array->items.size() : 1;
        if (written == 0) fail(route_array->position, "route", "at least one [[route]] is required");
    }

    if (!errors_.empty()) {
        std::stable_sort(errors_.begin(), errors_.end(), [](const Error& a, const Error& b) {
            return std::tie(a.line, a.column) < std::tie(b.line, b.column);
        });
        return std::move(errors_);
    }
    return std::shared_ptr<const Config>(std::move(config));
}

}  // namespace

bool parse_socket_address(std::string_view text, SocketAddress& out) { return address_problem(text, out).empty(); }

bool parse_duration(std::string_view text, Duration& out) {
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
    if (digits == 0) return false;
    const std::string_view unit = text.substr(digits);
    std::int64_t scale = 0;
    if (unit == "ms") {
        scale = 1;
    } else if (unit == "s") {
        scale = 1000;
    } else if (unit == "m") {
        scale = 60 * 1000;
    } else if (unit == "h") {
        scale = 60 * 60 * 1000;
    } else {
        return false;
    }
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + digits, value);
    if (ec != std::errc{} || end != text.data() + digits) return false;  // out of range
    if (value > std::numeric_limits<Duration::rep>::max() / scale) return false;
    out = Duration(value * scale);
    return true;
}

const Route* Config::match_route(std::string_view host, std::string_view path) const {
    const std::string_view name = bare_host(host);
    const Route* best = nullptr;
    std::size_t best_rank = 0;
    for (const Route& route : routes) {
        const std::size_t rank = host_rank(route.host, name);
        if (rank == 0 || path.substr(0, route.path_prefix.size()) != route.path_prefix) continue;
        if (best == nullptr || rank > best_rank ||
            (rank == best_rank && route.path_prefix.size() > best->path_prefix.size())) {
            best = &route;
            best_rank = rank;
        }
    }
    return best;
}

std::string Error::to_string() const {
    if (line == 0) return file + ": " + message;
    return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

LoadResult load_string(std::string_view text, const std::string& name) {
    auto document = toml_doc::parse_toml(text, name);
    if (Error* error = std::get_if<Error>(&document)) return std::vector<Error>{std::move(*error)};
    return Validator(name).run(std::get<Node>(document));
}

LoadResult load_file(const std::string& path) {
    std::string text;
    const int error = read_whole_file(path, text);
    if (error != 0) return std::vector<Error>{Error{path, 0, 0, std::string("cannot read: ") + std::strerror(error)}};
    return load_string(text, path);
}

}  // namespace config
