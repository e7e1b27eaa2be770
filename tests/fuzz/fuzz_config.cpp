// libFuzzer target: config::load_string on arbitrary text. It must never
// crash, and a rejected file must yield at least one error, each naming the
// file and carrying a message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const config::LoadResult result = config::load_string(text, "fuzz.toml");
    if (const auto* errors = std::get_if<std::vector<config::Error>>(&result)) {
        if (errors->empty()) std::abort();
        for (const config::Error& e : *errors) {
            if (e.message.empty() || e.file != "fuzz.toml") std::abort();
            if (e.to_string().empty()) std::abort();
        }
        return 0;
    }
    const auto& config = std::get<std::shared_ptr<const config::Config>>(result);
    if (!config || config->listeners.empty() || config->pools.empty() || config->routes.empty()) std::abort();
    for (const config::Route& route : config->routes) {
        if (route.pool_index >= config->pools.size() || config->pools[route.pool_index].name != route.pool) std::abort();
    }
    for (const config::Pool& pool : config->pools) {
        if (pool.backends.empty() && pool.sources.empty()) std::abort();  // DNS names may fill it later
    }
    config->match_route("a.example.com:80", "/x");
    return 0;
}
