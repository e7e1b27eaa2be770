// A tunnel's side on a plain TCP socket driven by the worker's io_uring
// (runtime/uring.h): see transport_uring.cpp.
#pragma once

#include <cstddef>
#include <memory>

#include "runtime/transport.h"
#include "runtime/uring.h"

namespace runtime {

// A transport over the connected plain socket <fd>, which it owns from here
// on (closed once the transport and every operation on the socket are gone,
// or at once when this fails). It starts reading. <max_io> bounds what one
// receive takes from the kernel, as make_socket_transport's does for a
// read. <ring> must outlive it. Null when out of memory.
std::unique_ptr<Transport> make_uring_transport(uring::Ring& ring, int fd, TransportUser& user, Side side,
                                                std::size_t max_io);

}  // namespace runtime
