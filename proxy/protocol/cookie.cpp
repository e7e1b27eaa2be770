#include "protocol/cookie.h"

namespace cookie {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

std::optional<std::string_view> find(std::string_view field, std::string_view name) {
    while (!field.empty()) {
        const std::size_t semicolon = field.find(';');
        const std::string_view pair = field.substr(0, semicolon);
        field = semicolon == std::string_view::npos ? std::string_view{} : field.substr(semicolon + 1);
        const std::size_t eq = pair.find('=');
        if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != name) continue;
        std::string_view value = trim(pair.substr(eq + 1));
        if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
        return value;
    }
    return std::nullopt;
}

std::optional<std::string_view> find(const http1::RequestHead& request, std::string_view name) {
    for (const http1::Header& h : request.headers) {
        if (!http1::iequals(h.name, "cookie")) continue;
        if (auto value = find(h.value, name)) return value;
    }
    return std::nullopt;
}

}  // namespace cookie
