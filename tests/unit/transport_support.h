// A TransportUser for the transport tests (test_transport_*.cpp): counts
// what a transport reports, and can act from inside each report as the
// tunnel policy does (free the transport, say).
#pragma once

#include <functional>

#include "runtime/transport.h"

namespace transport_test {

struct RecordingUser final : runtime::TransportUser {
    int readable = 0;
    int drained = 0;
    int failed = 0;
    runtime::Side last_side = runtime::Side::Client;
    std::function<void()> on_readable;
    std::function<void()> on_drained;
    void transport_readable(runtime::Side side) override {
        last_side = side;
        ++readable;
        if (on_readable) on_readable();
    }
    void transport_drained(runtime::Side side) override {
        last_side = side;
        ++drained;
        if (on_drained) on_drained();
    }
    void transport_failed(runtime::Side side) override {
        last_side = side;
        ++failed;
    }
};

}  // namespace transport_test
