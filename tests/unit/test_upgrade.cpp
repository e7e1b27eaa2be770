// Binary upgrade: the pure parts (inherited-socket environment, ready line,
// pid-file text), the pid file on disk, adopting inherited sockets, and the
// [server] pid_file key (proxy/runtime/upgrade.cpp; the process side,
// proxy/runtime/server_upgrade.cpp, is driven by tests/integration/49_upgrade.py).
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "runtime/upgrade.h"

namespace {

using upgrade::InheritedSocket;

std::vector<InheritedSocket> decoded(std::string_view text) {
    std::vector<InheritedSocket> out;
    std::string error;
    REQUIRE_MESSAGE(upgrade::decode_inherited(text, out, error), error);
    return out;
}

std::string decode_error(std::string_view text) {
    std::vector<InheritedSocket> out{InheritedSocket{"listen", "x", 0, 9}};
    std::string error;
    CHECK_FALSE(upgrade::decode_inherited(text, out, error));
    CHECK(out.empty());
    return error;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string temp_dir() {
    char templ[] = "/tmp/wsgate-test-upgrade-XXXXXX";
    REQUIRE(mkdtemp(templ) != nullptr);
    return templ;
}

sockaddr_storage ipv4(const char* ip, int port) {
    sockaddr_storage s{};
    auto& in = reinterpret_cast<sockaddr_in&>(s);
    in.sin_family = AF_INET;
    in.sin_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET, ip, &in.sin_addr);
    return s;
}

// A listening socket on 127.0.0.1 with a kernel-chosen port.
int listening_socket(sockaddr_storage& bound) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage any = ipv4("127.0.0.1", 0);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof(sockaddr_in)) == 0);
    REQUIRE(listen(fd, 16) == 0);
    socklen_t length = sizeof bound;
    REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) == 0);
    return fd;
}

}  // namespace

TEST_CASE("upgrade: inherited sockets round-trip through the environment text") {
    std::vector<InheritedSocket> sockets{
        {"listen", "127.0.0.1:8080", 0, 5},
        {"listen", "127.0.0.1:8080", 1, 6},
        {"listen", "[::1]:443", 0, 7},
        {"admin", "127.0.0.1:9901", 0, 12},
    };
    const std::string text = upgrade::encode_inherited(sockets);
    CHECK(text == "listen/127.0.0.1:8080/0=5,listen/127.0.0.1:8080/1=6,listen/[::1]:443/0=7,admin/127.0.0.1:9901/0=12");
    CHECK(decoded(text) == sockets);
    CHECK(upgrade::encode_inherited({}) == "");
    CHECK(decoded("").empty());
    CHECK(sockets[1].key() == "listen/127.0.0.1:8080/1");
}

TEST_CASE("upgrade: malformed inherited-socket text is refused whole") {
    CHECK(decode_error("listen/127.0.0.1:80/0") == "entry \"listen/127.0.0.1:80/0\": expected ROLE/ADDRESS/INDEX=FD");
    CHECK(decode_error("listen/127.0.0.1:80=5") == "entry \"listen/127.0.0.1:80=5\": expected ROLE/ADDRESS/INDEX=FD");
    CHECK(decode_error("listen/a/b/0=5") == "entry \"listen/a/b/0=5\": expected ROLE/ADDRESS/INDEX=FD");
    CHECK(decode_error("tunnel/127.0.0.1:80/0=5") == "entry \"tunnel/127.0.0.1:80/0=5\": unknown role");
    CHECK(decode_error("listen//0=5") == "entry \"listen//0=5\": bad address");
    CHECK(decode_error("listen/127.0.0.1:80/x=5") == "entry \"listen/127.0.0.1:80/x=5\": bad index");
    CHECK(decode_error("listen/127.0.0.1:80/-1=5") == "entry \"listen/127.0.0.1:80/-1=5\": bad index");
    CHECK(decode_error("listen/127.0.0.1:80/00=5") == "entry \"listen/127.0.0.1:80/00=5\": bad index");
    CHECK(decode_error("listen/127.0.0.1:80/0=05") == "entry \"listen/127.0.0.1:80/0=05\": bad descriptor");
    CHECK(decode_error("listen/127.0.0.1:80/0=") == "entry \"listen/127.0.0.1:80/0=\": bad descriptor");
    CHECK(decode_error("listen/127.0.0.1:80/0=+5") == "entry \"listen/127.0.0.1:80/0=+5\": bad descriptor");
    CHECK(decode_error("listen/127.0.0.1:80/0=5x") == "entry \"listen/127.0.0.1:80/0=5x\": bad descriptor");
    CHECK(decode_error("listen/127.0.0.1:80/0=99999999999") ==
          "entry \"listen/127.0.0.1:80/0=99999999999\": bad descriptor");
    CHECK(decode_error("listen/127.0.0.1:80/0=2") ==
          "entry \"listen/127.0.0.1:80/0=2\": descriptor below 3 (standard streams)");
    CHECK(decode_error("listen/127.0.0.1:80/0=5,listen/127.0.0.1:81/0=5") ==
          "entry \"listen/127.0.0.1:81/0=5\": descriptor named twice");
    CHECK(decode_error("listen/127.0.0.1:80/0=5,listen/127.0.0.1:80/0=6") ==
          "entry \"listen/127.0.0.1:80/0=6\": socket named twice");
    CHECK(decode_error("listen/127.0.0.1:80/0=5,") == "entry \"\": expected ROLE/ADDRESS/INDEX=FD");
    CHECK(decode_error(",listen/127.0.0.1:80/0=5") == "entry \"\": expected ROLE/ADDRESS/INDEX=FD");
}

TEST_CASE("upgrade: every prefix of a valid text either decodes or is refused, never crashes") {
    const std::string text = "listen/127.0.0.1:8080/0=5,listen/[::1]:443/1=17,admin/127.0.0.1:9901/0=12";
    for (std::size_t n = 0; n <= text.size(); ++n) {
        std::vector<InheritedSocket> out;
        std::string error;
        if (upgrade::decode_inherited(text.substr(0, n), out, error)) {
            CHECK(upgrade::encode_inherited(out) == text.substr(0, n));
        } else {
            CHECK(out.empty());
            CHECK_FALSE(error.empty());
        }
    }
}

TEST_CASE("upgrade: pid-file text") {
    CHECK(upgrade::pid_file_text(4242) == "4242\n");
    CHECK(upgrade::parse_pid_file_text("4242\n") == 4242);
    CHECK(upgrade::parse_pid_file_text("4242") == 4242);
    CHECK(upgrade::parse_pid_file_text(upgrade::pid_file_text(1)) == 1);
    for (std::string_view bad : {"", "\n", "0\n", "042\n", "-5\n", "12 \n", "x\n", "12\n\n", "99999999999\n", " 12"}) {
        CAPTURE(bad);
        CHECK_FALSE(upgrade::parse_pid_file_text(bad).has_value());
    }
}

TEST_CASE("upgrade: ready line") {
    upgrade::Ready none{123, {}};
    CHECK(upgrade::encode_ready(none) == "ready 123 unused=\n");
    CHECK(upgrade::decode_ready("ready 123 unused=\n") == none);
    upgrade::Ready some{77, {"listen/127.0.0.1:80/0", "admin/127.0.0.1:9/0"}};
    CHECK(upgrade::encode_ready(some) == "ready 77 unused=listen/127.0.0.1:80/0,admin/127.0.0.1:9/0\n");
    CHECK(upgrade::decode_ready(upgrade::encode_ready(some)) == some);
    for (std::string_view bad : {"", "ready", "ready 12", "ready x unused=", "ready 0 unused=", "ready 12 unused=a,",
                                 "ready 12 unused=,a", "ready 12 used=", "Ready 12 unused=", "ready  12 unused=",
                                 "ready 12 unused= extra", "exec-failed 2"}) {
        CAPTURE(bad);
        CHECK_FALSE(upgrade::decode_ready(bad).has_value());
    }
}

TEST_CASE("upgrade: same_address compares family, address and port") {
    CHECK(upgrade::same_address(ipv4("127.0.0.1", 80), ipv4("127.0.0.1", 80)));
    CHECK_FALSE(upgrade::same_address(ipv4("127.0.0.1", 80), ipv4("127.0.0.1", 81)));
    CHECK_FALSE(upgrade::same_address(ipv4("127.0.0.1", 80), ipv4("127.0.0.2", 80)));
    config::SocketAddress v6a, v6b;
    REQUIRE(config::parse_socket_address("[::1]:80", v6a));
    REQUIRE(config::parse_socket_address("[::1]:80", v6b));
    CHECK(upgrade::same_address(v6a.storage, v6b.storage));
    REQUIRE(config::parse_socket_address("[::2]:80", v6b));
    CHECK_FALSE(upgrade::same_address(v6a.storage, v6b.storage));
    CHECK_FALSE(upgrade::same_address(v6a.storage, ipv4("127.0.0.1", 80)));
}

TEST_CASE("upgrade: wait statuses are described for the log") {
    pid_t pid = fork();
    if (pid == 0) _exit(3);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(upgrade::describe_wait_status(status) == "exited with status 3");
    pid = fork();
    if (pid == 0) {
        pause();
        _exit(0);
    }
    kill(pid, SIGKILL);
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(upgrade::describe_wait_status(status) == "killed by signal 9 (Killed)");
}

TEST_CASE("upgrade: the pid file is replaced atomically and removed only by its owner") {
    const std::string dir = temp_dir();
    const std::string path = dir + "/wsgate.pid";
    std::string error;
    REQUIRE(upgrade::write_pid_file(path, 111, error));
    CHECK(read_file(path) == "111\n");
    CHECK(upgrade::read_pid_file(path) == 111);
    struct stat before {};
    REQUIRE(stat(path.c_str(), &before) == 0);
    REQUIRE(upgrade::write_pid_file(path, 222, error));
    struct stat after {};
    REQUIRE(stat(path.c_str(), &after) == 0);
    CHECK(read_file(path) == "222\n");
    CHECK(before.st_ino != after.st_ino);  // a rename, not a rewrite in place
    upgrade::remove_pid_file_if_ours(path, 111);  // not ours any more: kept
    CHECK(read_file(path) == "222\n");
    upgrade::remove_pid_file_if_ours(path, 222);
    CHECK(access(path.c_str(), F_OK) != 0);
    CHECK_FALSE(upgrade::read_pid_file(path).has_value());
    // No temporary file is left behind.
    CHECK(rmdir(dir.c_str()) == 0);

    CHECK_FALSE(upgrade::write_pid_file("/nonexistent-dir-wsgate/x.pid", 1, error));
    CHECK(error.starts_with("/nonexistent-dir-wsgate/x.pid.tmp."));
}

TEST_CASE("upgrade: the new process adopts inherited sockets by role, address, index and bound address") {
    sockaddr_storage bound{};
    int a = listening_socket(bound);
    sockaddr_storage bound_b{};
    int b = listening_socket(bound_b);  // bound elsewhere than its name says below
    // fds without close-on-exec, as exec left them
    fcntl(a, F_SETFD, 0);
    const std::string text = upgrade::encode_inherited(std::vector<InheritedSocket>{
        {"listen", "127.0.0.1:1111", 0, a}, {"listen", "127.0.0.1:1111", 1, b}});
    setenv(upgrade::kInheritedEnv, text.c_str(), 1);
    upgrade::Inherited inherited;
    std::string error;
    REQUIRE_MESSAGE(inherited.load_from_environment(error), error);
    CHECK(std::getenv(upgrade::kInheritedEnv) == nullptr);  // not passed on to a later upgrade by accident
    CHECK(inherited.active());
    CHECK((fcntl(a, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(inherited.take("admin", "127.0.0.1:1111", 0, bound) == -1);    // wrong role
    CHECK(inherited.take("listen", "127.0.0.1:1111", 2, bound) == -1);   // wrong index
    CHECK(inherited.take("listen", "127.0.0.1:1111", 1, bound) == -1);   // socket b is bound elsewhere
    CHECK(inherited.take("listen", "127.0.0.1:1111", 0, bound) == a);
    CHECK(inherited.take("listen", "127.0.0.1:1111", 0, bound) == -1);   // taken once
    REQUIRE(inherited.remaining("listen").size() == 1);
    CHECK(inherited.close_remaining() == std::vector<std::string>{"listen/127.0.0.1:1111/1"});
    CHECK(fcntl(b, F_GETFD) < 0);  // closed
    close(a);

    setenv(upgrade::kInheritedEnv, "listen/127.0.0.1:1/0=1000", 1);
    upgrade::Inherited closed;
    CHECK_FALSE(closed.load_from_environment(error));
    CHECK(error == "WSGATE_INHERITED_FDS: descriptor 1000 (listen/127.0.0.1:1/0) is not open");
    setenv(upgrade::kReadyFdEnv, "x", 1);
    upgrade::Inherited bad_ready;
    CHECK_FALSE(bad_ready.load_from_environment(error));
    CHECK(error == "WSGATE_UPGRADE_READY_FD: not an open descriptor: \"x\"");
    upgrade::Inherited nothing;
    CHECK(nothing.load_from_environment(error));
    CHECK_FALSE(nothing.active());
}

TEST_CASE("upgrade: the ready line reaches the old process through the pipe") {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    setenv(upgrade::kReadyFdEnv, std::to_string(fds[1]).c_str(), 1);
    upgrade::Inherited inherited;
    std::string error;
    REQUIRE(inherited.load_from_environment(error));
    inherited.report_ready({"listen/127.0.0.1:5/0"});
    char buffer[128];
    ssize_t n = read(fds[0], buffer, sizeof buffer);
    REQUIRE(n > 0);
    auto ready = upgrade::decode_ready(std::string_view(buffer, static_cast<std::size_t>(n)));
    REQUIRE(ready.has_value());
    CHECK(ready->pid == getpid());
    CHECK(ready->unused == std::vector<std::string>{"listen/127.0.0.1:5/0"});
    CHECK(read(fds[0], buffer, sizeof buffer) == 0);  // the write end is closed
    close(fds[0]);
}

TEST_CASE("upgrade: [server] pid_file") {
    const std::string base =
        "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[pool]]\nname = \"main\"\n[[pool.backend]]\n"
        "address = \"127.0.0.1:9000\"\n[[route]]\npool = \"main\"\n";
    auto ok = config::load_string("[server]\npid_file = \"/run/wsgate.pid\"\n" + base, "t.toml");
    REQUIRE(std::holds_alternative<std::shared_ptr<const config::Config>>(ok));
    CHECK(std::get<std::shared_ptr<const config::Config>>(ok)->server.pid_file == "/run/wsgate.pid");
    auto absent = config::load_string(base, "t.toml");
    REQUIRE(std::holds_alternative<std::shared_ptr<const config::Config>>(absent));
    CHECK(std::get<std::shared_ptr<const config::Config>>(absent)->server.pid_file.empty());
    for (auto [text, message] : {std::pair{"[server]\npid_file = \"\"\n", "t.toml:2:12: server.pid_file: expected a path, got \"\""},
                                 std::pair{"[server]\npid_file = 5\n", "t.toml:2:12: server.pid_file: expected a string, got an integer"}}) {
        auto bad = config::load_string(std::string(text) + base, "t.toml");
        REQUIRE(std::holds_alternative<std::vector<config::Error>>(bad));
        const auto& errors = std::get<std::vector<config::Error>>(bad);
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].to_string() == message);
    }
}
