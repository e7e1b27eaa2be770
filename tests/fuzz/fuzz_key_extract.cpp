// libFuzzer target for extract_key: never crashes, and the key is always a
// view into the part of the request it came from (or the client address).
//
// Input layout: byte 0 = length of the header value (also used as the Cookie
// value), byte 1 = length of the query, byte 2 = length of the key name; then
// those three parts in that order; the rest is the path. Lengths are clamped
// to what is left.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "balance/chash.h"

namespace {

std::string_view take(std::string_view& rest, std::size_t n) {
    n = n < rest.size() ? n : rest.size();
    std::string_view part = rest.substr(0, n);
    rest.remove_prefix(n);
    return part;
}

bool within(std::string_view inner, std::string_view outer) {
    return inner.data() >= outer.data() && inner.data() + inner.size() <= outer.data() + outer.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 3) return 0;
    std::string_view rest(reinterpret_cast<const char*>(data) + 3, size - 3);
    const std::string_view value = take(rest, data[0]);
    const std::string_view query = take(rest, data[1]);
    const std::string_view name = take(rest, data[2]);
    const std::string_view path = rest;
    static constexpr std::string_view kClient = "198.51.100.1";

    http1::RequestHead request;
    request.path = path;
    request.query = query;
    request.headers = {{"Host", "example.com"}, {name, value}, {"Cookie", value}, {"cookie", path}};

    const chash::KeySource sources[] = {chash::KeySource::Ip, chash::KeySource::Header, chash::KeySource::Cookie,
                                        chash::KeySource::Query, chash::KeySource::Path};
    for (chash::KeySource source : sources) {
        const chash::KeySpec spec{source, std::string(name)};
        const chash::Key key = chash::extract_key(spec, request, kClient);
        bool ok = false;
        if (key.fell_back || source == chash::KeySource::Ip) {
            ok = key.value.data() == kClient.data() && key.value.size() == kClient.size();
        } else {
            // Header may also match "Host" or "Cookie" when <name> is one of them.
            ok = !key.value.empty() &&
                 (within(key.value, value) || within(key.value, query) || within(key.value, path) ||
                  key.value == "example.com");
        }
        if (!ok) std::abort();
    }
    return 0;
}
