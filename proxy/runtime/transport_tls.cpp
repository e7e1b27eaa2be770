// The raw tunnel's TLS I/O (declared in transport_tls.h): an SSL session taken
// over from its bufferevent, read and written on its socket directly.
#include "runtime/transport_tls.h"
#include "net/stream_socket.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include <event2/bufferevent.h>
#include <openssl/err.h>

namespace runtime::raw_tls {

namespace {

int bio_write(BIO* bio, const char* data, int length) {
    const int fd = static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(bio)));
    const ssize_t n = send(fd, data, static_cast<std::size_t>(length), MSG_NOSIGNAL | MSG_DONTWAIT);
    BIO_clear_retry_flags(bio);
    if (n < 0 && net::would_block(errno)) BIO_set_retry_write(bio);
    return static_cast<int>(n);
}

int bio_read(BIO* bio, char* data, int length) {
    const int fd = static_cast<int>(reinterpret_cast<std::intptr_t>(BIO_get_data(bio)));
    const ssize_t n = recv(fd, data, static_cast<std::size_t>(length), 0);
    BIO_clear_retry_flags(bio);
    if (n < 0 && net::would_block(errno)) BIO_set_retry_read(bio);
    return static_cast<int>(n);
}

long bio_ctrl(BIO*, int command, long, void*) {
    switch (command) {
        case BIO_CTRL_FLUSH: return 1;
        case BIO_C_GET_FD: return -1;
        default: return 0;
    }
}

}  // namespace

BIO* new_socket_bio(int fd) {
    // Built once; a BIO_METHOD is immutable and shared by all threads.
    static BIO_METHOD* const method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wsgate tunnel socket");
        if (m) {
            BIO_meth_set_write(m, bio_write);
            BIO_meth_set_read(m, bio_read);
            BIO_meth_set_ctrl(m, bio_ctrl);
        }
        return m;
    }();
    BIO* bio = method ? BIO_new(method) : nullptr;
    if (bio) {
        BIO_set_data(bio, reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)));
        BIO_set_init(bio, 1);
    }
    return bio;
}

bool take_over(SSL* ssl, int fd) {
    BIO* bio = new_socket_bio(fd);
    if (!bio) return false;
    SSL_set_bio(ssl, bio, bio);
    SSL_set_read_ahead(ssl, 1);
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return true;
}

ssize_t write(SSL* ssl, const void* data, std::size_t length, bool& wants_read) {
    ERR_clear_error();
    const int written = SSL_write(ssl, data, static_cast<int>(std::min<std::size_t>(length, INT32_MAX)));
    wants_read = false;
    if (written > 0) return written;
    switch (SSL_get_error(ssl, written)) {
        case SSL_ERROR_WANT_WRITE: return 0;
        case SSL_ERROR_WANT_READ: wants_read = true; return 0;
        default: return -1;
    }
}

short read(SSL* ssl, std::uint8_t* data, std::size_t room, std::size_t& got, bool& wants_write) {
    got = 0;
    wants_write = false;
    ERR_clear_error();
    while (got < room) {
        errno = 0;
        const int n = SSL_read(ssl, data + got, static_cast<int>(std::min<std::size_t>(room - got, INT32_MAX)));
        if (n > 0) {
            got += static_cast<std::size_t>(n);
            continue;
        }
        switch (SSL_get_error(ssl, n)) {
            case SSL_ERROR_WANT_READ: return 0;
            case SSL_ERROR_WANT_WRITE: wants_write = true; return 0;
            case SSL_ERROR_ZERO_RETURN: return BEV_EVENT_EOF;
            case SSL_ERROR_SYSCALL:
                // OpenSSL 3 reports a TCP close without close_notify as an
                // SSL error (unexpected EOF) rather than SYSCALL with errno 0.
                return errno == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR;
            case SSL_ERROR_SSL:
                return ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING ? BEV_EVENT_EOF
                                                                                             : BEV_EVENT_ERROR;
            default: return BEV_EVENT_ERROR;
        }
    }
    return 0;
}

}  // namespace runtime::raw_tls
