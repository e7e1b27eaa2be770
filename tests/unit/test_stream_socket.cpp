#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "net/stream_socket.h"

TEST_CASE("open_stream_socket: non-blocking and close-on-exec, for both families") {
    for (int family : {AF_INET, AF_INET6}) {
        int fd = net::open_stream_socket(family);
        if (fd < 0 && family == AF_INET6 && errno == EAFNOSUPPORT) continue;  // host without IPv6
        REQUIRE(fd >= 0);
        CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
        CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
        int type = 0;
        socklen_t length = sizeof type;
        REQUIRE(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0);
        CHECK(type == SOCK_STREAM);
        close(fd);
    }
}

TEST_CASE("open_stream_socket: an exhausted descriptor table is a local shortage") {
    rlimit saved{};
    REQUIRE(getrlimit(RLIMIT_NOFILE, &saved) == 0);
    // Fill the table under a small limit, then ask for one more.
    rlimit low = saved;
    low.rlim_cur = 64;
    REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
    std::vector<int> held;
    int fd = -1;
    int error = 0;
    while ((fd = net::open_stream_socket(AF_INET)) >= 0) held.push_back(fd);
    error = errno;
    for (int h : held) close(h);
    REQUIRE(setrlimit(RLIMIT_NOFILE, &saved) == 0);
    CHECK(error == EMFILE);
    CHECK(net::is_local_shortage(error));
}

TEST_CASE("is_local_shortage: host shortages versus peer failures") {
    for (int error : {EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL}) CHECK(net::is_local_shortage(error));
    for (int error : {ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ECONNRESET, EAFNOSUPPORT, 0})
        CHECK_FALSE(net::is_local_shortage(error));
}

TEST_CASE("would_block: retry-later errors, not failures") {
    CHECK(net::would_block(EAGAIN));
    CHECK(net::would_block(EWOULDBLOCK));
    CHECK(net::would_block(EINTR));
    CHECK_FALSE(net::would_block(ECONNRESET));
    CHECK_FALSE(net::would_block(EPIPE));
    CHECK_FALSE(net::would_block(0));
}
