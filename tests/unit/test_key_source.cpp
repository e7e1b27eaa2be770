// jwks::load_file and file stamps: what the jwks_file watcher compares.
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <variant>

#include "auth/key_source.h"
#include "jwt_support.h"

TEST_CASE("jwks::load_file: stamps follow renames and writes") {
    jwt_test::TempFile file(jwt_test::jwks_of(jwt_test::rsa_2048().get(), "one"));
    auto first = jwks::load_file(file.path);
    REQUIRE(std::holds_alternative<jwks::LoadedFile>(first));
    const auto stamp = std::get<jwks::LoadedFile>(first).stamp;
    CHECK(jwks::stamp_of(file.path) == stamp);
    // Atomic replace: a new inode.
    jwt_test::TempFile next(jwt_test::jwks_of(jwt_test::p256().get(), "two"));
    REQUIRE(std::rename(next.path.c_str(), file.path.c_str()) == 0);
    auto second = jwks::load_file(file.path);
    REQUIRE(std::holds_alternative<jwks::LoadedFile>(second));
    CHECK_FALSE(std::get<jwks::LoadedFile>(second).stamp == stamp);
    CHECK(std::get<jwks::LoadedFile>(second).set.keys[0].kid == "two");
    CHECK(jwks::load_file(file.path, jwks::Limits{.max_bytes = 10, .max_keys = 64}).index() == 1);
    CHECK(std::get<std::string>(jwks::load_file("/tmp")) == "cannot read /tmp: not a regular file");
    CHECK_FALSE(jwks::stamp_of("/nonexistent/x").has_value());
}
