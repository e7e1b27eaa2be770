// The HTTP/2 configuration contract (issue 16): [[listener]] http2 and the
// [limits] h2_* keys, their defaults, ranges and exact error texts.
#include <doctest/doctest.h>

#include <string>

#include "config_support.h"

using config_test::kBase;
using config_test::load_error;
using config_test::load_ok;

TEST_CASE("config http2: defaults") {
    auto cfg = load_ok(kBase);
    // A plain listener speaks HTTP/2 only when asked (h2c with prior knowledge).
    CHECK_FALSE(cfg->listeners[0].http2);
    CHECK(cfg->limits.h2_max_concurrent_streams == 100);
    CHECK(cfg->limits.h2_stream_window_bytes == 262144);
    CHECK(cfg->limits.h2_connection_window_bytes == 4194304);
}

TEST_CASE("config http2: values set") {
    auto cfg = load_ok(std::string(R"([[listener]]
listen = "127.0.0.1:8080"
http2 = true
[[listener]]
listen = "127.0.0.1:8081"
http2 = false
[limits]
h2_max_concurrent_streams = 10000
h2_stream_window_bytes = 65535
h2_connection_window_bytes = 2147483647
[[pool]]
name = "main"
[[pool.backend]]
address = "127.0.0.1:9001"
)"));
    CHECK(cfg->listeners[0].http2);
    CHECK_FALSE(cfg->listeners[1].http2);
    CHECK(cfg->limits.h2_max_concurrent_streams == 10000);
    CHECK(cfg->limits.h2_stream_window_bytes == 65535);
    CHECK(cfg->limits.h2_connection_window_bytes == 2147483647);
}

TEST_CASE("config http2: bad values name file, line and column") {
    CHECK(load_error(std::string(kBase) + "[limits]\nh2_max_concurrent_streams = 0\n") ==
          "t.toml:8:29: limits.h2_max_concurrent_streams: must be a positive integer, got 0");
    CHECK(load_error(std::string(kBase) + "[limits]\nh2_max_concurrent_streams = 10001\n") ==
          "t.toml:8:29: limits.h2_max_concurrent_streams: must be between 1 and 10000, got 10001");
    CHECK(load_error(std::string(kBase) + "[limits]\nh2_stream_window_bytes = 65534\n") ==
          "t.toml:8:26: limits.h2_stream_window_bytes: must be between 65535 and 2147483647, got 65534");
    CHECK(load_error(std::string(kBase) + "[limits]\nh2_connection_window_bytes = 2147483648\n") ==
          "t.toml:8:30: limits.h2_connection_window_bytes: must be between 65535 and 2147483647, got 2147483648");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:8080\"\nhttp2 = \"yes\"\n[[pool]]\nname = \"main\"\n"
                     "[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n") ==
          "t.toml:3:9: listener[0].http2: expected true or false, got a string");
    CHECK(load_error("[[listener]]\nlisten = \"127.0.0.1:8080\"\nhttp = true\n[[pool]]\nname = \"main\"\n"
                     "[[pool.backend]]\naddress = \"127.0.0.1:9001\"\n") ==
          "t.toml:3:1: listener[0].http: unknown key (expected listen, tls, proxy_protocol, trusted_proxies or http2)");
}
