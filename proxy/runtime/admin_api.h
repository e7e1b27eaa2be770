// The admin endpoints' handlers (the routes are in admin_route.h): the
// dashboard's files, /metrics, /healthz, /status, and the operator's drain
// and enable of one back end. Runs on the main thread; what it changes for
// the workers goes through BackendState's atomics and Worker::notify_backends,
// the same wake-up a reload uses.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "protocol/http1.h"
#include "runtime/admin.h"
#include "runtime/admin_route.h"
#include "runtime/worker.h"

namespace runtime {

class AdminApi {
public:
    // What the server provides: its renderings and its state.
    struct Hooks {
        std::function<std::string()> metrics;  // Prometheus text
        std::function<std::string()> status;   // /status JSON
        std::function<bool()> stopping;        // a graceful stop is under way
    };

    AdminApi(Shared& shared, std::vector<std::unique_ptr<Worker>>& workers, Hooks hooks);

    AdminResponse handle(const http1::RequestHead& request);

private:
    AdminResponse control_backend(const admin_route::Route& route);

    Shared& shared_;
    std::vector<std::unique_ptr<Worker>>& workers_;
    Hooks hooks_;
};

// {"error":"<message>"} with <status> (and Allow for a 405).
AdminResponse admin_json_error(int status, std::string_view message, std::string allow = {});

}  // namespace runtime
