#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "observability/log_sink.h"

namespace {

std::string temp_path(const char* name) {
    return "/tmp/wsgate-test-" + std::to_string(getpid()) + "-" + name;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

TEST_CASE("a sink writes every queued line before close returns") {
    std::string path = temp_path("sink.log");
    std::remove(path.c_str());
    {
        obs::LogSink sink(path, -1);
        std::string error;
        REQUIRE(sink.open(error));
        for (int i = 0; i < 1000; ++i) sink.write("line " + std::to_string(i));
        sink.close();
        sink.write("after close is dropped");
    }
    std::string text = slurp(path);
    CHECK(text.rfind("line 0\nline 1\n", 0) == 0);
    CHECK(text.find("line 999\n") != std::string::npos);
    CHECK(text.find("after close") == std::string::npos);
    std::remove(path.c_str());
}

TEST_CASE("reopen follows a renamed file (logrotate)") {
    std::string path = temp_path("rotate.log");
    std::string rotated = path + ".1";
    std::remove(path.c_str());
    std::remove(rotated.c_str());
    obs::LogSink sink(path, -1);
    std::string error;
    REQUIRE(sink.open(error));
    sink.write("before");
    sink.close();
    // A fresh sink per phase keeps the test free of timing: close() drains.
    REQUIRE(std::rename(path.c_str(), rotated.c_str()) == 0);
    obs::LogSink sink2(path, -1);
    REQUIRE(sink2.open(error));
    sink2.write("first");
    REQUIRE(std::rename(path.c_str(), (path + ".2").c_str()) == 0);
    sink2.reopen();
    sink2.write("second");
    sink2.close();
    CHECK(slurp(rotated) == "before\n");
    std::string after_rename = slurp(path + ".2");
    std::string reopened = slurp(path);
    // "first" went to the renamed file; "second" to the new one, unless the
    // writer had not yet drained "first" when reopen was requested, in which
    // case both are still in order across the two files.
    CHECK(after_rename.rfind("first\n", 0) == 0);
    CHECK((after_rename + reopened).find("second\n") != std::string::npos);
    std::remove(rotated.c_str());
    std::remove((path + ".2").c_str());
    std::remove(path.c_str());
}

TEST_CASE("an unwritable path is an error, an empty path discards") {
    obs::LogSink bad("/nonexistent-dir/x.log", -1);
    std::string error;
    CHECK_FALSE(bad.open(error));
    CHECK(error.find("/nonexistent-dir/x.log") == 0);
    obs::LogSink off("", -1);
    CHECK(off.open(error));
    CHECK_FALSE(off.enabled());
    off.write("nothing");
}
