// The TLS side of the socket transport (transport_socket.cpp) as functions over an SSL
// session and its socket, so that they can be exercised without a Session
// or an event loop (tests/unit/test_transport_tls.cpp).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include <openssl/ssl.h>

namespace runtime::raw_tls {

// Prepares <ssl>, taken over from a bufferevent, to run on socket <fd>: a
// BIO that sends with MSG_NOSIGNAL and reports no descriptor (the
// bufferevent's destructor, which may run a loop turn later, closes
// whatever descriptor the session's BIO names), read-ahead on, and partial
// writes retried from a buffer that may have moved and grown. False when
// out of memory (<ssl> is then unchanged).
bool take_over(SSL* ssl, int fd);

// The BIO take_over() installs.
BIO* new_socket_bio(int fd);

// Hands <length> bytes (> 0) to <ssl>. Returns how many it took, 0 when the
// socket is full or, with <wants_read> set, the session must read first, or
// -1 when the connection failed. A refused write must be retried with the
// same bytes at the front, as OpenSSL requires.
ssize_t write(SSL* ssl, const void* data, std::size_t length, bool& wants_read);

// Reads <ssl> into <data> until SSL_read() wants the socket again or <room>
// bytes are in; <got> says how many. Records that OpenSSL read ahead raise
// no readiness event, which is why reading goes on until then; when <got>
// reaches <room>, more may be buffered. <wants_write>: the session must
// write before it can read on. Returns 0 while the stream is open, else
// BEV_EVENT_EOF (close_notify, or TCP closed without it: a dirty shutdown
// still ends the stream) or BEV_EVENT_ERROR.
short read(SSL* ssl, std::uint8_t* data, std::size_t room, std::size_t& got, bool& wants_write);

}  // namespace runtime::raw_tls
