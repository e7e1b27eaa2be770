// [server] io (issue 18, part 4): how tunnels drive their plain sockets, its
// default, both values and the exact error texts.
#include <doctest/doctest.h>

#include "config_support.h"

using config_test::base;
using config_test::kBase;
using config_test::load_error;
using config_test::load_ok;

TEST_CASE("config io: epoll unless asked") {
    CHECK(load_ok(kBase)->server.io == config::Io::Epoll);
    CHECK(load_ok(base("[server]\nworkers = 2\n"))->server.io == config::Io::Epoll);
    CHECK(config_test::loaded(config::load_file("conf/wsgate.toml"))->server.io == config::Io::Epoll);
}

TEST_CASE("config io: both values") {
    CHECK(load_ok(base("[server]\nio = \"epoll\"\n"))->server.io == config::Io::Epoll);
    CHECK(load_ok(base("[server]\nio = \"io_uring\"\n"))->server.io == config::Io::IoUring);
}

TEST_CASE("config io: errors name the place, the key and the choices") {
    CHECK(load_error(base("[server]\nio = \"uring\"\n")) ==
          "t.toml:8:6: server.io: expected \"epoll\" or \"io_uring\", got \"uring\"");
    CHECK(load_error(base("[server]\nio = \"IO_URING\"\n")) ==
          "t.toml:8:6: server.io: expected \"epoll\" or \"io_uring\", got \"IO_URING\"");
    CHECK(load_error(base("[server]\nio = \"\"\n")) == "t.toml:8:6: server.io: expected \"epoll\" or \"io_uring\", got \"\"");
    CHECK(load_error(base("[server]\nio = true\n")) == "t.toml:8:6: server.io: expected a string, got a boolean");
}
