// libFuzzer target for the binary-upgrade texts a new process reads from its
// environment (WSGATE_INHERITED_FDS) and the old one reads from the ready
// pipe, and the pid file's text. Whatever decodes must encode back to the
// same text; a refused inherited-socket text leaves no socket behind and
// says why.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/upgrade.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);

    std::vector<upgrade::InheritedSocket> sockets;
    std::string error;
    if (upgrade::decode_inherited(text, sockets, error)) {
        if (upgrade::encode_inherited(sockets) != text) __builtin_trap();
        for (const upgrade::InheritedSocket& s : sockets) {
            if (s.fd < 3 || s.address.empty()) __builtin_trap();
        }
    } else if (!sockets.empty() || error.empty()) {
        __builtin_trap();
    }

    if (auto ready = upgrade::decode_ready(text)) {
        if (ready->pid <= 0) __builtin_trap();
        auto again = upgrade::decode_ready(upgrade::encode_ready(*ready));
        if (!again || !(*again == *ready)) __builtin_trap();
    }

    if (auto pid = upgrade::parse_pid_file_text(text)) {
        if (*pid <= 0 || upgrade::parse_pid_file_text(upgrade::pid_file_text(*pid)) != pid) __builtin_trap();
    }
    return 0;
}
