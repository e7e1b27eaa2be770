#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/sd_notify.h"

namespace {

// A datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    int fd = -1;
    std::string path;
    explicit NotifySocket(bool abstract) {
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        std::string name = "/tmp/wsgate-test-notify-" + std::to_string(getpid());
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::memcpy(address.sun_path, name.c_str(), name.size());
        if (abstract) address.sun_path[0] = '\0';
        unlink(name.c_str());
        REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address),
                     static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size())) == 0);
        path = abstract ? "@" + name.substr(1) : name;
    }
    ~NotifySocket() {
        close(fd);
        if (path[0] == '/') unlink(path.c_str());
    }
    std::string receive() {
        char buffer[512];
        ssize_t n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
        return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
    }
};

}  // namespace

TEST_CASE("sd_notify sends one datagram per state to $NOTIFY_SOCKET") {
    for (bool abstract : {false, true}) {
        CAPTURE(abstract);
        NotifySocket socket(abstract);
        setenv("NOTIFY_SOCKET", socket.path.c_str(), 1);
        CHECK(runtime::sd_notify("READY=1"));
        CHECK(socket.receive() == "READY=1");
        CHECK(runtime::sd_notify_reloading());
        std::string reloading = socket.receive();
        CHECK(reloading.rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0);
        CHECK(reloading.size() > std::strlen("RELOADING=1\nMONOTONIC_USEC="));
        CHECK(runtime::sd_notify("STOPPING=1"));
        CHECK(socket.receive() == "STOPPING=1");
    }
    unsetenv("NOTIFY_SOCKET");
}

TEST_CASE("sd_notify without $NOTIFY_SOCKET, or with a dead one, reports failure") {
    unsetenv("NOTIFY_SOCKET");
    CHECK_FALSE(runtime::sd_notify("READY=1"));
    setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock", 1);
    CHECK_FALSE(runtime::sd_notify("READY=1"));
    unsetenv("NOTIFY_SOCKET");
}
