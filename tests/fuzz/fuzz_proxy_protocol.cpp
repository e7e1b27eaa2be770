// libFuzzer target for the PROXY protocol parser: the whole input and every
// prefix of it must agree. A prefix shorter than a complete header needs
// more; a prefix of an invalid header needs more or fails with the same
// reason; a Done result never consumes more than it was given. The first
// byte also picks a v2 length limit, so the limit check is fuzzed too.
#include <cstddef>
#include <cstdint>
#include <span>

#include "net/proxy_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t limit = data[0] < 128 ? proxyproto::max_v2_length : 16 + data[0];
    std::span<const std::uint8_t> input(data + 1, size - 1);
    const auto whole = proxyproto::parse(input, limit);
    if (whole.status == proxyproto::Status::Done) {
        if (whole.consumed == 0 || whole.consumed > input.size()) __builtin_trap();
        if (whole.version != 1 && whole.version != 2) __builtin_trap();
        if (!whole.local && whole.source_text.empty()) __builtin_trap();
    }
    if (whole.status == proxyproto::Status::Error && whole.error.empty()) __builtin_trap();
    // Every split point up to 512 bytes (quadratic work stays small).
    const std::size_t splits = input.size() < 512 ? input.size() : 512;
    for (std::size_t cut = 0; cut < splits; ++cut) {
        const auto part = proxyproto::parse(input.first(cut), limit);
        switch (whole.status) {
        case proxyproto::Status::Done:
            if (cut < whole.consumed) {
                if (part.status != proxyproto::Status::NeedMore) __builtin_trap();
            } else if (part.status != proxyproto::Status::Done || part.consumed != whole.consumed ||
                       part.source_text != whole.source_text) {
                __builtin_trap();
            }
            break;
        case proxyproto::Status::Error:
            if (part.status == proxyproto::Status::Done) __builtin_trap();
            if (part.status == proxyproto::Status::Error && part.error != whole.error) __builtin_trap();
            break;
        case proxyproto::Status::NeedMore:
            if (part.status != proxyproto::Status::NeedMore) __builtin_trap();
            break;
        }
    }
    return 0;
}
