#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "runtime/upstream_pool.h"

namespace {

// A bufferevent on one end of a socketpair; the test keeps the other end.
struct Pair {
    bufferevent* bev = nullptr;
    int peer = -1;
    Pair(event_base* base) {
        int fds[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
        bev = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
        peer = fds[1];
    }
};

// Runs the loop until nothing is left to do right now.
void turn(event_base* base) { event_base_loop(base, EVLOOP_NONBLOCK); }

struct Base {
    event_base* base = event_base_new();
    ~Base() { event_base_free(base); }
};

}  // namespace

TEST_CASE("parked connections are handed back newest first, per back end") {
    Base b;
    {
        runtime::UpstreamPool pool(4);
        Pair first(b.base), second(b.base), other(b.base);
        pool.put("b1", first.bev, 60000);
        pool.put("b1", second.bev, 60000);
        pool.put("b2", other.bev, 60000);
        CHECK(pool.idle() == 3);
        CHECK(pool.take("b1") == second.bev);
        CHECK(pool.take("b1") == first.bev);
        CHECK(pool.take("b1") == nullptr);
        CHECK(pool.take("nope") == nullptr);
        CHECK(pool.idle() == 1);
        bufferevent_free(first.bev);
        bufferevent_free(second.bev);
        for (int fd : {first.peer, second.peer, other.peer}) close(fd);
    }
}

TEST_CASE("a back end closing, or talking on, an idle connection drops it") {
    Base b;
    runtime::UpstreamPool pool(4);
    Pair closed(b.base), talking(b.base), quiet(b.base);
    pool.put("b1", closed.bev, 60000);
    pool.put("b1", talking.bev, 60000);
    pool.put("b1", quiet.bev, 60000);
    close(closed.peer);
    CHECK(write(talking.peer, "HTTP/1.1 408 Request Timeout\r\n\r\n", 33) == 33);
    for (int i = 0; i < 5; ++i) turn(b.base);
    CHECK(pool.idle() == 1);
    CHECK(pool.take("b1") == quiet.bev);
    bufferevent_free(quiet.bev);
    close(talking.peer);
    close(quiet.peer);
}

TEST_CASE("idle connections expire, and the oldest goes when a back end is full") {
    Base b;
    runtime::UpstreamPool pool(2);
    Pair a(b.base), c(b.base), d(b.base);
    pool.put("b1", a.bev, 60000);
    pool.put("b1", c.bev, 60000);
    pool.put("b1", d.bev, 60000);  // over the bound of 2: <a> is closed
    CHECK(pool.idle() == 2);
    turn(b.base);  // libevent 2.1 finalises a freed bufferevent (and closes its fd) in the loop
    char byte;
    CHECK(read(a.peer, &byte, 1) == 0);  // EOF: the pool closed it
    Pair e(b.base);
    pool.put("b2", e.bev, 1);
    usleep(20000);
    for (int i = 0; i < 5; ++i) turn(b.base);
    CHECK(pool.take("b2") == nullptr);
    CHECK(pool.idle() == 2);
    pool.clear();
    CHECK(pool.idle() == 0);
    for (int fd : {a.peer, c.peer, d.peer, e.peer}) close(fd);
}

TEST_CASE("drop_backend closes the parked connections of one back end only") {
    Base b;
    runtime::UpstreamPool pool(4);
    Pair a1(b.base), a2(b.base), other(b.base), prefix(b.base);
    pool.put("b1\n127.0.0.1:9001", a1.bev, 60000);
    pool.put("b1\n127.0.0.1:9001", a2.bev, 60000);
    pool.put("b2\n127.0.0.1:9002", other.bev, 60000);
    pool.put("b10\n127.0.0.1:9010", prefix.bev, 60000);  // "b1" is a prefix of its id, not its id
    CHECK(pool.idle() == 4);
    pool.drop_backend("b1");
    turn(b.base);  // libevent finalizes freed bufferevents (and closes their sockets) in the loop
    CHECK(pool.idle() == 2);
    CHECK(pool.take("b1\n127.0.0.1:9001") == nullptr);
    // The peers see the close.
    char byte;
    CHECK(read(a1.peer, &byte, 1) == 0);
    CHECK(read(a2.peer, &byte, 1) == 0);
    CHECK(pool.take("b2\n127.0.0.1:9002") == other.bev);
    CHECK(pool.take("b10\n127.0.0.1:9010") == prefix.bev);
    bufferevent_free(other.bev);
    bufferevent_free(prefix.bev);
    for (int fd : {a1.peer, a2.peer, other.peer, prefix.peer}) close(fd);
}
