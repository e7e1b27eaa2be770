// The JWK Set and authentication metrics, rendered as Prometheus text.
#include <doctest/doctest.h>

#include <string>

#include "observability/auth_metrics.h"

TEST_CASE("auth metrics render as Prometheus text") {
    obs::AuthMetrics m;
    std::string empty = m.render();
    CHECK(empty.find("# TYPE wsgate_auth_failures_total counter") != std::string::npos);
    CHECK(empty.find("# TYPE wsgate_jwks_keys gauge") != std::string::npos);
    CHECK(empty.find("wsgate_subject_limit_refusals_total 0\n") != std::string::npos);
    m.auth_failure("/chat", "bad signature");
    m.auth_failure("/chat", "bad signature");
    m.auth_failure("x\"y", "missing token");
    m.jwks_fetch("/chat", true);
    m.jwks_fetch("/chat", false);
    m.jwks_keys("/chat", 2);
    m.subject_limit_refusal();
    const std::string text = m.render();
    CHECK(text.find("wsgate_auth_failures_total{route=\"/chat\",reason=\"bad signature\"} 2\n") != std::string::npos);
    CHECK(text.find("wsgate_auth_failures_total{route=\"x\\\"y\",reason=\"missing token\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_jwks_fetches_total{route=\"/chat\",result=\"ok\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_jwks_fetches_total{route=\"/chat\",result=\"error\"} 1\n") != std::string::npos);
    CHECK(text.find("wsgate_jwks_keys{route=\"/chat\"} 2\n") != std::string::npos);
    CHECK(text.find("wsgate_subject_limit_refusals_total 1\n") != std::string::npos);
    CHECK(m.failures("/chat", "bad signature") == 2);
    CHECK(m.fetches("/chat", false) == 1);
}
