#include "net/stream_socket.h"

#include <sys/socket.h>

#include <cerrno>

namespace net {

int open_stream_socket(int family) { return socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

bool is_local_shortage(int error) {
    switch (error) {
        case EMFILE:         // this process's descriptor limit
        case ENFILE:         // the system's
        case ENOBUFS:        // socket buffer memory
        case ENOMEM:
        case EADDRNOTAVAIL:  // no ephemeral port left for this destination
            return true;
        default:
            return false;
    }
}

}  // namespace net
