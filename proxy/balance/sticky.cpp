#include "balance/sticky.h"

#include <fmt/format.h>

#include "balance/chash.h"
#include "protocol/cookie.h"

namespace sticky {

std::string token(std::string_view pool, std::string_view backend_id) {
    std::string material;
    material.reserve(pool.size() + 1 + backend_id.size());
    material.append(pool);
    material.push_back('\0');
    material.append(backend_id);
    return fmt::format("{:016x}", chash::hash_bytes(material));
}

std::size_t find(std::span<const std::string> tokens, std::string_view value) {
    if (value.empty()) return chash::kNone;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] == value) return i;
    }
    return chash::kNone;
}

std::string_view cookie_value(const http1::RequestHead& request, std::string_view name) {
    return cookie::find(request, name).value_or(std::string_view{});
}

std::string set_cookie(std::string_view name, std::string_view token) {
    return fmt::format("{}={}; Path=/; HttpOnly; SameSite=Lax", name, token);
}

bool valid_cookie_name(std::string_view name) {
    if (name.empty()) return false;
    for (char c : name) {
        const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) return false;
    }
    return true;
}

}  // namespace sticky
