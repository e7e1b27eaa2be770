// max_sessions_per_subject: the cross-worker counts of open sessions per
// verified subject and route.
#include <doctest/doctest.h>

#include <string>

#include "runtime/subject_limits.h"

TEST_CASE("max_sessions_per_subject counts: admitted up to the limit, released, per route") {
    runtime::SubjectLimits limits;
    const std::string alice = runtime::SubjectLimits::key("/chat", "alice");
    const std::string bob = runtime::SubjectLimits::key("/chat", "bob");
    CHECK(alice != runtime::SubjectLimits::key("/other", "alice"));
    CHECK(runtime::SubjectLimits::key("/a", "b/c") != runtime::SubjectLimits::key("/a/b", "c"));
    for (int i = 0; i < 3; ++i) CHECK(limits.acquire(alice, 3));
    CHECK_FALSE(limits.acquire(alice, 3));
    CHECK(limits.acquire(bob, 3));
    CHECK(limits.open(alice) == 3);
    limits.release(alice);
    CHECK(limits.acquire(alice, 3));
    CHECK_FALSE(limits.acquire(alice, 3));
    for (int i = 0; i < 3; ++i) limits.release(alice);
    CHECK(limits.open(alice) == 0);
    limits.release(alice);  // an unknown key is ignored
    CHECK(limits.open(alice) == 0);
    CHECK_FALSE(limits.acquire(runtime::SubjectLimits::key("/chat", "carol"), 0));
    CHECK(limits.open(runtime::SubjectLimits::key("/chat", "carol")) == 0);
}
