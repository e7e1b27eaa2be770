// Opening a socket towards a back end, and telling a shortage on this host
// from a failure of the peer: only the latter says anything about the back
// end's health.
#pragma once

#include <cerrno>

namespace net {

// A non-blocking, close-on-exec TCP socket of <family> (AF_INET or AF_INET6),
// not yet connected; -1 with errno set when none can be had.
int open_stream_socket(int family);

// Whether <error> (an errno value) means that this process or host ran out
// of something (descriptors, buffer memory, ephemeral ports) rather than
// that the peer refused or failed.
bool is_local_shortage(int error);

// Whether <error> (an errno value) from a non-blocking read or write means
// "not now, try when the socket is ready" rather than a failure.
inline bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

}  // namespace net
