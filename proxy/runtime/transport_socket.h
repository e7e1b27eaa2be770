// A tunnel's side on a socket of its own, plain or TLS, read and written
// directly (no bufferevent): see transport_socket.cpp for why.
#pragma once

#include <memory>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "runtime/transport.h"

namespace runtime {

// A transport over the connected socket <fd>, which it owns from here on
// (closed on destruction, even when this fails). <ssl>, when not null, is a
// TLS session on that socket prepared by raw_tls::take_over(); the
// transport owns one reference to it.
std::unique_ptr<Transport> make_socket_transport(event_base* base, int fd, SSL* ssl, TransportUser& user, Side side,
                                                 std::size_t max_io);

}  // namespace runtime
