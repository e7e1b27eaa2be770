#include "runtime/admin_api.h"

#include <fmt/format.h>

#include "observability/access_log.h"
#include "runtime/dashboard_assets.h"

namespace runtime {

namespace {

constexpr const char* kJson = "application/json";
constexpr const char* kText = "text/plain; charset=utf-8";

std::string quoted(std::string_view s) {
    std::string out = "\"";
    obs::append_json_escaped(out, s);
    out += '"';
    return out;
}

}  // namespace

AdminResponse admin_json_error(int status, std::string_view message, std::string allow) {
    return AdminResponse{status, kJson, "{\"error\":" + quoted(message) + "}\n", std::move(allow)};
}

AdminApi::AdminApi(Shared& shared, std::vector<std::unique_ptr<Worker>>& workers, Hooks hooks)
    : shared_(shared), workers_(workers), hooks_(std::move(hooks)) {}

AdminResponse AdminApi::handle(const http1::RequestHead& request) {
    const admin_route::Route route = admin_route::route(request.method, request.path, request.query);
    if (route.status != 200) return admin_json_error(route.status, route.error, route.allow);
    switch (route.endpoint) {
        case admin_route::Endpoint::Dashboard:
        case admin_route::Endpoint::Asset: {
            const DashboardAsset* asset =
                find_dashboard_asset(route.endpoint == admin_route::Endpoint::Dashboard ? "index.html" : route.asset);
            if (!asset) return admin_json_error(404, "not found");
            return AdminResponse{200, std::string(asset->content_type), std::string(asset->body), {}};
        }
        case admin_route::Endpoint::Metrics:
            return AdminResponse{200, "text/plain; version=0.0.4; charset=utf-8", hooks_.metrics(), {}};
        case admin_route::Endpoint::Healthz:
            return hooks_.stopping() ? AdminResponse{503, kText, "draining\n", {}}
                                     : AdminResponse{200, kText, "ok\n", {}};
        case admin_route::Endpoint::Status: return AdminResponse{200, kJson, hooks_.status(), {}};
        case admin_route::Endpoint::Drain:
        case admin_route::Endpoint::Enable: break;
    }
    const std::string& token = shared_.current_generation()->config().admin.token;
    if (!token.empty()) {
        const http1::Header* authorization = request.find("authorization");
        if (!authorization || !admin_route::bearer_matches(authorization->value, token)) {
            return admin_json_error(401, "missing or wrong \"Authorization: Bearer <admin.token>\"");
        }
    }
    return control_backend(route);
}

// Sets the back end's runtime state (carried over by reloads with the rest
// of BackendState), then wakes every worker to act on it.
AdminResponse AdminApi::control_backend(const admin_route::Route& route) {
    auto generation = shared_.current_generation();
    const PoolRuntime* pool = nullptr;
    for (const PoolRuntime& p : generation->pools()) {
        if (p.config->name == route.pool) pool = &p;
    }
    if (!pool) return admin_json_error(404, "no pool \"" + route.pool + "\"");
    std::size_t index = pool->config->backends.size();
    for (std::size_t i = 0; i < pool->config->backends.size(); ++i) {
        if (pool->config->backends[i].id == route.backend) index = i;
    }
    if (index == pool->config->backends.size()) {
        return admin_json_error(404, "no back end \"" + route.backend + "\" in pool \"" + route.pool + "\"");
    }
    BackendState& state = *pool->states[index];
    const bool drain = route.endpoint == admin_route::Endpoint::Drain;
    const std::int64_t window = route.within ? route.within->count() : generation->config().server.drain_timeout.count();
    if (drain) state.drain_window_ms.store(window, std::memory_order_relaxed);
    state.draining.store(drain, std::memory_order_relaxed);
    for (auto& worker : workers_) worker->notify_backends();
    if (shared_.error_log) {
        if (drain) {
            shared_.error_log->log(obs::Level::Info, "admin: draining back end {} of pool {} over {} ms", route.backend,
                                   route.pool, window);
        } else {
            shared_.error_log->log(obs::Level::Info, "admin: back end {} of pool {} enabled", route.backend, route.pool);
        }
    }
    const std::uint64_t active = state.active.load(std::memory_order_relaxed);
    // As /status says it: healthy by active checks, not in a passive cooldown.
    const std::int64_t now = workers_.empty() ? 0 : workers_.front()->now_ms();
    const bool up = state.healthy.load(std::memory_order_relaxed) &&
                    state.down_until_ms.load(std::memory_order_relaxed) <= now;
    std::string body = fmt::format("{{\"pool\":{},\"id\":{},\"state\":\"{}\",\"active_sessions\":{}", quoted(route.pool),
                                   quoted(route.backend), admin_route::backend_state(up, drain, active), active);
    if (drain) body += fmt::format(",\"within_ms\":{}", window);
    body += "}\n";
    return AdminResponse{200, kJson, body, {}};
}

}  // namespace runtime
