// libFuzzer target for the admin router: input is "METHOD\nPATH\nQUERY".
// Whatever it is, the route is one of the documented statuses with a reason
// when refused, an Allow list with every 405, decoded names that hold no '/'
// or control byte, and a within only for a drain. bearer_matches never accepts a
// token that differs from the header's.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/admin_route.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    const std::size_t first = input.find('\n');
    if (first == std::string_view::npos) return 0;
    const std::size_t second = input.find('\n', first + 1);
    const std::string_view method = input.substr(0, first);
    const std::string_view path = input.substr(first + 1, second == std::string_view::npos ? std::string_view::npos
                                                                                           : second - first - 1);
    const std::string_view query = second == std::string_view::npos ? std::string_view{} : input.substr(second + 1);
    const admin_route::Route r = admin_route::route(method, path, query);
    switch (r.status) {
        case 200:
            if (r.write() && method != "POST") __builtin_trap();
            if (!r.write() && method != "GET" && method != "HEAD") __builtin_trap();
            if (r.write() && (r.pool.empty() || r.backend.empty())) __builtin_trap();
            for (char c : r.pool + r.backend) {
                if (c == '/' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f) __builtin_trap();
            }
            if (r.within && r.endpoint != admin_route::Endpoint::Drain) __builtin_trap();
            break;
        case 405:
            if (std::string_view(r.allow).empty()) __builtin_trap();
            [[fallthrough]];
        case 400:
        case 404:
            if (r.error.empty()) __builtin_trap();
            break;
        default: __builtin_trap();
    }
    // The query doubles as a token guess against the path as the secret.
    std::string header = "Bearer ";
    header += query;
    if (admin_route::bearer_matches(header, path)) {
        std::string_view q = query;
        while (!q.empty() && q.front() == ' ') q.remove_prefix(1);
        while (!q.empty() && (q.back() == ' ' || q.back() == '\t')) q.remove_suffix(1);
        if (q != path) __builtin_trap();
    }
    return 0;
}
