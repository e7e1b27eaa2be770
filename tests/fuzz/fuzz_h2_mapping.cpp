// libFuzzer target for h2map::to_http1 and h2map::from_http1. Input: fields
// "name\0value\n" (the decoder's output for one header block). Rules: an
// accepted request's head parses with wsgate's HTTP/1.1 parser as exactly
// one complete head; an extended CONNECT's head passes the upgrade check
// with our key; a refusal carries 400 or 501. Any broken rule traps.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/h2_mapping.h"
#include "protocol/http1.h"
#include "protocol/websocket.h"

namespace {

void require(bool ok) {
    if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    h2map::Request request;
    while (!input.empty()) {
        const std::size_t end = input.find('\n');
        std::string_view line = input.substr(0, end);
        input = end == std::string_view::npos ? std::string_view() : input.substr(end + 1);
        const std::size_t zero = line.find('\0');
        if (zero == std::string_view::npos) continue;
        request.add(line.substr(0, zero), line.substr(zero + 1));
    }
    static const std::string key = h2map::websocket_key(0x0123456789abcdefULL, 0xfedcba9876543210ULL);
    const h2map::Translation t = h2map::to_http1(request, key, request.method == "POST" ? std::optional<std::uint64_t>(3) : std::nullopt);
    if (!t.ok) {
        require(t.status == 400 || t.status == 501);
        return 0;
    }
    http1::RequestParser parser(http1::Limits{1 << 20, 100000, 1 << 20});
    http1::RequestHead head;
    const http1::Result parsed = parser.parse(t.head, head);
    // A head may still be refused by the HTTP/1.1 parser (e.g. a bad Host):
    // the Session answers it; but it never parses as something shorter.
    if (parsed.status == http1::Status::Done) {
        require(parsed.consumed == t.head.size());
        if (t.websocket) {
            const ws::UpgradeCheck check = ws::check_upgrade_request(head);
            require(check.is_upgrade);
            if (check.ok) require(check.key == key);
        }
        http1::ResponseParser response_parser;
        http1::ResponseHead response;
        if (response_parser.parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", response).status ==
            http1::Status::Done) {
            require(h2map::from_http1(response).status == 200);
        }
    } else {
        require(parsed.status == http1::Status::Error);
    }
    return 0;
}
