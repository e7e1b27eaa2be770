#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "observability/error_log.h"
#include "observability/log_sink.h"

namespace {

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

TEST_CASE("the error log filters by level and stamps each line") {
    std::string path = "/tmp/wsgate-test-" + std::to_string(getpid()) + "-error.log";
    std::remove(path.c_str());
    obs::LogSink sink(path, -1);
    std::string error;
    REQUIRE(sink.open(error));
    obs::ErrorLog log(sink, obs::Level::Warn);
    log.log(obs::Level::Info, "hidden {}", 1);
    log.log(obs::Level::Warn, "shown {}", 2);
    log.set_level(obs::Level::Debug);
    CHECK(log.enabled(obs::Level::Debug));
    log.log(obs::Level::Debug, "now shown {}", 3);
    sink.close();
    std::string text = slurp(path);
    CHECK(text.find("hidden") == std::string::npos);
    CHECK(text.find("[warn] shown 2\n") != std::string::npos);
    CHECK(text.find("[debug] now shown 3\n") != std::string::npos);
    CHECK(text.size() > 24);
    CHECK(text[4] == '-');
    CHECK(text[23] == 'Z');
    std::remove(path.c_str());
}
