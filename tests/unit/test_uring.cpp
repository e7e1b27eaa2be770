// The worker's io_uring (runtime/uring.h) on a real libevent loop: batched
// submission, entries beyond the submission queue, deferred calls, the
// provided-buffer pool, and a teardown that waits for what is in flight.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "runtime/uring.h"
#include "uring_support.h"

namespace {

using runtime::uring::Deferred;
using runtime::uring::Handler;
using runtime::uring::Options;
using runtime::uring::Received;
using runtime::uring::Ring;
using uring_test::Loop;
using uring_test::make_ring;

struct Completion {
    unsigned tag;
    std::int32_t result;
    std::uint32_t flags;
};

// Records its completions; <gone> is set when the Ring deletes it.
struct Recorder final : Handler {
    std::vector<Completion> completions;
    bool* gone = nullptr;
    std::int32_t* last_result = nullptr;
    ~Recorder() override {
        if (gone) *gone = true;
    }
    void complete(unsigned tag, std::int32_t result, std::uint32_t flags) override {
        completions.push_back({tag, result, flags});
        if (last_result) *last_result = result;
    }
};

struct SocketPair {
    int fds[2] = {-1, -1};
    SocketPair() { REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0); }
    ~SocketPair() {
        for (int fd : fds) {
            if (fd >= 0) close(fd);
        }
    }
};

Options pool(unsigned buffers, unsigned buffer_bytes) {
    Options options;
    options.buffers = buffers;
    options.buffer_bytes = buffer_bytes;
    return options;
}

// A receive armed (tag 1) on one end of a socket pair, ending after
// <limit> bytes; the test writes to the other end.
struct Receiving {
    Loop loop;
    std::unique_ptr<Ring> ring;
    SocketPair pair;
    Recorder recorder;

    explicit Receiving(const Options& options = {}, std::uint32_t limit = 1 << 20) : ring(make_ring(loop, options)) {
        ring->receive(recorder, 1, pair.fds[0], limit);
        loop.run_for(10);
    }
    void write_far(const std::string& data) {
        REQUIRE(write(pair.fds[1], data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    }
    bool ended() const { return !recorder.completions.empty() && !(recorder.completions.back().flags & IORING_CQE_F_MORE); }
};

}  // namespace

TEST_CASE("uring: bad pool options are refused with a reason") {
    Loop loop;
    Options options;
    options.buffers = 3;
    std::string error;
    CHECK_FALSE(Ring::create(loop.base(), error, options));
    CHECK(error == "io_uring: buffers must be a power of two up to 32768, of a non-zero size");
}

TEST_CASE("uring: everything queued in a turn goes to the kernel in one submit") {
    Loop loop;
    auto ring = make_ring(loop);
    std::vector<SocketPair> pairs(100);
    Recorder recorder;
    const std::uint64_t before = ring->submits();
    static const std::uint8_t kMessage[] = "batched";
    for (SocketPair& pair : pairs) ring->send(recorder, 2, pair.fds[0], kMessage, sizeof kMessage);
    CHECK(ring->submits() == before);
    loop.turn();
    CHECK(ring->submits() == before + 1);
    REQUIRE(recorder.completions.size() == pairs.size());  // reaped in the same turn
    for (const Completion& c : recorder.completions) {
        CHECK(c.tag == 2);
        CHECK(c.result == static_cast<std::int32_t>(sizeof kMessage));
    }
    char got[sizeof kMessage];
    for (SocketPair& pair : pairs) CHECK(read(pair.fds[1], got, sizeof got) == static_cast<ssize_t>(sizeof got));
}

TEST_CASE("uring: entries beyond the submission queue wait in memory, none is lost") {
    Loop loop;
    Options options;
    options.entries = 8;
    auto ring = make_ring(loop, options);
    std::vector<SocketPair> pairs(100);
    Recorder recorder;
    static const std::uint8_t kMessage[] = "overflowing";
    for (SocketPair& pair : pairs) ring->send(recorder, 3, pair.fds[0], kMessage, sizeof kMessage);
    REQUIRE(loop.run_until([&] { return recorder.completions.size() == pairs.size(); }));
    for (const Completion& c : recorder.completions) CHECK(c.result == static_cast<std::int32_t>(sizeof kMessage));
    CHECK(ring->submits() <= 100 / 8 + 3);
}

TEST_CASE("uring: a deferred call that defers itself runs again later, not in a loop") {
    Loop loop;
    auto ring = make_ring(loop);
    struct Again final : Deferred {
        Ring* ring = nullptr;
        int runs = 0;
        void run() override {
            if (++runs < 10) ring->defer(*this);
        }
    } again;
    again.ring = ring.get();
    ring->defer(again);
    CHECK(again.runs == 0);  // never from inside defer()
    loop.turn();
    CHECK(again.runs >= 1);
    CHECK(again.runs <= 4);  // a few rounds per turn, then the loop's other events
    REQUIRE(loop.run_until([&] { return again.runs == 10; }));
    loop.run_for(20);
    CHECK(again.runs == 10);
}

TEST_CASE("uring: a destroyed deferred call is not run") {
    Loop loop;
    auto ring = make_ring(loop);
    struct Count final : Deferred {
        int* runs;
        explicit Count(int* r) : runs(r) {}
        void run() override { ++*runs; }
    };
    int runs = 0;
    auto call = std::make_unique<Count>(&runs);
    ring->defer(*call);
    CHECK(call->pending());
    call.reset();
    loop.run_for(20);
    CHECK(runs == 0);
}

TEST_CASE("uring: received bytes are held in pool buffers until taken") {
    Receiving r(pool(8, 1024));
    const std::string data = uring_test::pattern(3000, 11);
    r.write_far(data);
    Received queue;
    bool all_armed = true;
    REQUIRE(r.loop.run_until([&] {
        for (const Completion& c : r.recorder.completions) {
            r.ring->hold(queue, c.flags, c.result);
            all_armed = all_armed && (c.flags & IORING_CQE_F_MORE);
        }
        r.recorder.completions.clear();
        return queue.bytes == data.size();
    }));
    CHECK(all_armed);  // one receive, still armed
    Ring& ring = *r.ring;
    CHECK(ring.buffers_in_kernel() == 8 - 3);  // 3000 bytes in 1024-byte buffers
    std::string taken(data.size(), '\0');
    auto* out = reinterpret_cast<std::uint8_t*>(taken.data());
    CHECK(ring.take(queue, {out, 1500}) == 1500);
    CHECK(ring.buffers_in_kernel() == 8 - 2);  // the first buffer was emptied and recycled
    CHECK(ring.take(queue, {out + 1500, 5000}) == 1500);
    CHECK(taken == data);
    CHECK(queue.empty());
    CHECK(ring.buffers_in_kernel() == 8);

    // The end of the stream: a last completion with result 0, no buffer kept.
    shutdown(r.pair.fds[1], SHUT_WR);
    REQUIRE(r.loop.run_until([&] { return r.ended(); }));
    CHECK(r.recorder.completions.back().result == 0);
    ring.hold(queue, r.recorder.completions.back().flags, 0);
    CHECK(queue.empty());
    CHECK(ring.buffers_in_kernel() == 8);
}

TEST_CASE("uring: a multishot receive ends once it took its limit") {
    Receiving r(pool(16, 1024), 4096);
    r.write_far(std::string(10000, 'x'));
    REQUIRE(r.loop.run_until([&] { return r.ended(); }));
    std::int32_t taken = 0;
    for (const Completion& c : r.recorder.completions) taken += c.result;
    CHECK(r.recorder.completions.back().result > 0);  // ended by the limit, not by an error
    if (r.ring->receive_limit()) {  // Linux 6.17 or later
        CHECK(taken >= 4096);
        CHECK(taken <= 4096 + 1024);  // one buffer over at most
    } else {
        MESSAGE("this kernel has no multishot receive limit: single-shot receives");
        CHECK(taken == 1024);
    }
}

TEST_CASE("uring: a receive with the pool empty ends with -ENOBUFS") {
    Receiving r(pool(1, 512));
    r.write_far(std::string(2000, 'x'));
    REQUIRE(r.loop.run_until([&] { return r.ended(); }));
    CHECK(r.recorder.completions.front().result == 512);
    CHECK(r.recorder.completions.back().result == -ENOBUFS);
    Received queue;
    r.ring->hold(queue, r.recorder.completions.front().flags, 512);
    CHECK(r.ring->short_of_buffers());
    r.ring->drop(queue);
    CHECK(r.ring->buffers_in_kernel() == 1);
    CHECK_FALSE(r.ring->short_of_buffers());
}

TEST_CASE("uring: cancelling a receive ends it with -ECANCELED") {
    Receiving r;
    r.ring->cancel(r.recorder, 1);
    REQUIRE(r.loop.run_until([&] { return r.ended(); }));
    CHECK(r.recorder.completions.back().result == -ECANCELED);
}

TEST_CASE("uring: the Ring's teardown cancels what is in flight and deletes its orphans") {
    Loop loop;
    auto ring = make_ring(loop);
    SocketPair pair;
    bool gone = false;
    std::int32_t last_result = 0;
    auto* orphan = new Recorder;
    orphan->gone = &gone;
    orphan->last_result = &last_result;
    ring->receive(*orphan, 1, pair.fds[0], 1 << 20);
    loop.run_for(10);
    ring->adopt(orphan);
    CHECK(ring->orphans() == 1);
    ring.reset();
    CHECK(last_result == -ECANCELED);  // the destructor waited for it
    CHECK(gone);
}

TEST_CASE("uring: a released handler is deleted after the turn's submit") {
    Loop loop;
    auto ring = make_ring(loop);
    bool gone = false;
    auto* handler = new Recorder;
    handler->gone = &gone;
    ring->adopt(handler);
    ring->release(handler);
    CHECK(ring->orphans() == 0);
    CHECK_FALSE(gone);
    loop.turn();
    CHECK(gone);
}
