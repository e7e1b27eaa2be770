// Helpers shared by the configuration tests (test_config*.cpp): a minimal
// valid file to append to, and loading it with every error made visible.
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.h"

namespace config_test {

// A valid file of 6 lines: what is appended starts at line 7.
constexpr std::string_view kBase = R"([[listener]]
listen = "127.0.0.1:8080"
[[pool]]
name = "main"
[[pool.backend]]
address = "127.0.0.1:9001"
)";

inline std::string base(std::string_view more) { return std::string(kBase) + std::string(more); }

// The config of <result>, failing the test (with every error printed) when
// it has errors.
inline std::shared_ptr<const config::Config> loaded(const config::LoadResult& result) {
    if (const auto* errors = std::get_if<std::vector<config::Error>>(&result)) {
        for (const config::Error& e : *errors) MESSAGE(e.to_string());
        FAIL("unexpected errors");
    }
    return std::get<std::shared_ptr<const config::Config>>(result);
}

inline std::shared_ptr<const config::Config> load_ok(std::string_view text) {
    return loaded(config::load_string(text, "t.toml"));
}

inline std::vector<std::string> load_errors(std::string_view text) {
    const config::LoadResult result = config::load_string(text, "t.toml");
    REQUIRE(std::holds_alternative<std::vector<config::Error>>(result));
    std::vector<std::string> out;
    for (const config::Error& e : std::get<std::vector<config::Error>>(result)) out.push_back(e.to_string());
    return out;
}

// The one error of <text>.
inline std::string load_error(std::string_view text) {
    const std::vector<std::string> errors = load_errors(text);
    if (errors.size() != 1) {
        for (const std::string& e : errors) MESSAGE(e);
    }
    REQUIRE(errors.size() == 1);
    return errors[0];
}

}  // namespace config_test
