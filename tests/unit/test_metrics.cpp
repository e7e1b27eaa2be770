#include <doctest/doctest.h>

#include <string>

#include "observability/metrics.h"

TEST_CASE("prometheus rendering sums workers and keeps histograms cumulative") {
    obs::WorkerMetrics a;
    obs::WorkerMetrics b;
    a.bytes[0].add(100);
    b.bytes[0].add(23);
    a.messages[1].add(4);
    a.observe_handshake(700);      // 0.7 ms -> le 0.001
    b.observe_handshake(2000000);  // 2 s -> le 5
    b.observe_handshake(9000000);  // 9 s -> +Inf
    a.session_ended({"main", "127.0.0.1:9001", 101}, 1000, "client");
    b.session_ended({"main", "127.0.0.1:9001", 101}, 1000, "client");
    b.session_ended({"main", "", 404}, 0, "proxy");
    a.connection_opened("127.0.0.1:8080");
    a.connection_opened("127.0.0.1:8080");
    a.connection_closed("127.0.0.1:8080");

    obs::ProcessSnapshot process;
    process.listeners = {"127.0.0.1:8080", "127.0.0.1:8443"};
    process.generation = 3;
    process.reloads_failed = 1;
    process.backends.push_back({"main", "b\"1", "127.0.0.1:9001", true, false, 5});
    std::string text = obs::render_prometheus({&a, &b}, process);

    CHECK(text.find("wsgate_bytes_total{direction=\"client_to_backend\"} 123\n") != std::string::npos);
    CHECK(text.find("wsgate_messages_total{direction=\"backend_to_client\"} 4\n") != std::string::npos);
    CHECK(text.find("wsgate_handshake_duration_seconds_bucket{le=\"0.0005\"} 0\n") != std::string::npos);
    CHECK(text.find("wsgate_handshake_duration_seconds_bucket{le=\"0.001\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_handshake_duration_seconds_bucket{le=\"5\"} 2\n") != std::string::npos);
    CHECK(text.find("wsgate_handshake_duration_seconds_bucket{le=\"+Inf\"} 3\n") != std::string::npos);
    CHECK(text.find("wsgate_handshake_duration_seconds_count 3\n") != std::string::npos);
    CHECK(text.find("wsgate_handshake_duration_seconds_sum 11.0007\n") != std::string::npos);
    CHECK(text.find("wsgate_sessions_total{pool=\"main\",backend=\"127.0.0.1:9001\",status=\"101\"} 2\n") !=
          std::string::npos);
    CHECK(text.find("wsgate_sessions_total{pool=\"main\",backend=\"\",status=\"404\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_closes_total{code=\"1000\",by=\"client\"} 2\n") != std::string::npos);
    CHECK(text.find("code=\"0\"") == std::string::npos);
    CHECK(text.find("wsgate_connections_active{listener=\"127.0.0.1:8080\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_connections_active{listener=\"127.0.0.1:8443\"} 0\n") != std::string::npos);
    CHECK(text.find("wsgate_connections_accepted_total 2\n") != std::string::npos);
    CHECK(text.find("wsgate_backend_active_sessions{pool=\"main\",backend=\"b\\\"1\"} 5\n") != std::string::npos);
    CHECK(text.find("wsgate_reloads_total{result=\"failure\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_config_generation 3\n") != std::string::npos);
    // Every sample's family is declared.
    std::size_t pos = 0;
    while ((pos = text.find('\n', pos)) != std::string::npos && pos + 1 < text.size()) {
        std::string line = text.substr(pos + 1, text.find('\n', pos + 1) - pos - 1);
        ++pos;
        if (line.empty() || line[0] == '#') continue;
        std::string name = line.substr(0, line.find_first_of("{ "));
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
            std::string s = suffix;
            if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
                text.find("# TYPE " + name.substr(0, name.size() - s.size()) + " histogram") != std::string::npos) {
                name = name.substr(0, name.size() - s.size());
            }
        }
        CAPTURE(line);
        CHECK(text.find("# TYPE " + name + " ") != std::string::npos);
    }
}

TEST_CASE("label values are escaped") {
    CHECK(obs::escape_label("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
}
