// What the files of Session share and nothing else needs: Session's
// implementation is split along its seams (session.cpp: lifecycle, trampolines
// and ending; session_handshake.cpp: the client's side of the handshake;
// session_backend.cpp: the back end's; tunnel.cpp: the tunnel policy;
// transport_*.cpp: the byte transports under the tunnel).
#pragma once

#include <cstdint>

#include "runtime/session.h"

namespace runtime::detail {

// How long a tunnel waits for the close handshake to complete after the
// first close frame before it drops both connections (issue: "or 5 s after
// the first close frame").
inline constexpr std::int64_t kCloseLingerMs = 5000;

inline const char* side_name(Side side) { return side == Side::Client ? "client" : "backend"; }

}  // namespace runtime::detail
