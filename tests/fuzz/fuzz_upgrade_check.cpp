// libFuzzer target for ws::check_upgrade_request and
// ws::check_upgrade_response. Input: byte 0 picks the method and HTTP minor
// version, the rest is header lines "Name: value" separated by '\n' (built by
// hand, so this target does not depend on the HTTP parser). The verdict must
// be consistent; an accepted request's key, answered with compute_accept(key)
// in a 101, must pass check_upgrade_response, and a changed accept must not.
// Any broken rule traps.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/websocket.h"

namespace {

void require(bool ok) {
    if (!ok) __builtin_trap();
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

constexpr std::string_view kMethods[4] = {"GET", "POST", "get", "HEAD"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    http1::RequestHead request;
    request.method = kMethods[data[0] & 3];
    request.version_minor = (data[0] & 4) ? 0 : 1;
    std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
    while (!rest.empty()) {
        const std::size_t nl = rest.find('\n');
        const std::string_view line = rest.substr(0, nl);
        const std::size_t colon = line.find(':');
        if (colon != std::string_view::npos) {
            request.headers.push_back({line.substr(0, colon), trim(line.substr(colon + 1))});
        }
        if (nl == std::string_view::npos) break;
        rest.remove_prefix(nl + 1);
    }

    const ws::UpgradeCheck c = ws::check_upgrade_request(request);
    require(c.is_upgrade == request.has_token("Upgrade", "websocket"));
    if (!c.ok) {
        require(c.http_status == 400 || c.http_status == 405 || c.http_status == 426);
        require(!c.reason.empty() && c.key.empty());
        require(c.needs_version_header == (c.is_upgrade && c.http_status == 426));
        return 0;
    }
    require(c.is_upgrade && c.http_status == 0 && !c.needs_version_header);
    require(request.method == "GET" && request.version_minor == 1);
    require(c.key.size() == 24);

    const std::string accept = ws::compute_accept(c.key);
    require(accept.size() == 28);
    http1::ResponseHead response;
    response.status = 101;
    response.headers = {{"Upgrade", "websocket"}, {"Connection", "Upgrade"}, {"Sec-WebSocket-Accept", accept}};
    require(ws::check_upgrade_response(response, c.key).ok);
    std::string wrong = accept;
    wrong[data[0] % 27] ^= 0x20;
    response.headers[2].value = wrong;
    require(!ws::check_upgrade_response(response, c.key).ok);
    return 0;
}
