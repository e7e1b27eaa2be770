// The io_uring transport: a plain TCP socket read by one multishot receive
// into the worker Ring's provided buffers and written by sends from a queue
// of copied bytes, every operation submitted with the rest of the loop
// turn's in one io_uring_enter().
//
// Two objects: the Transport the tunnel owns, and the socket state
// (UringSocket) that the Ring's completions name. The socket outlives its
// transport while operations are in flight: the kernel may still write
// into a receive buffer or read a send block, and the descriptor must stay
// open (a closed number could be reused by a new socket that a pending
// operation would then touch). Destroying the transport cancels them; the
// Ring owns the socket until the last completion, which closes it.
//
// Reading: while reading is wanted, one multishot receive is armed. It
// takes about max_io bytes from the kernel at most, as one read() of the
// epoll transport would, and is armed again once less than that waits
// unread; so a socket never holds much more than its reader asked for. Its
// completions hold pool buffers and make one transport_readable() per loop
// turn; read() copies from them and recycles each emptied buffer.
// set_reading(false) cancels the receive, so that bytes wait in the kernel
// and TCP's window closes: backpressure, as with epoll. What was received
// already is read first; while reading is off it moves out of the pool into
// blocks of the socket's own, so that a tunnel paused for a slow peer pins
// none of the buffers every socket of the worker receives into. The end of
// the stream (res 0) or an error is reported by the read that takes the last
// byte before it.
//
// Writing: send() appends to a queue of blocks; one send is in flight at a
// time (ordering), a partial one continues from where it stopped, and each
// completion that shrinks the queue calls transport_drained().
#include "runtime/transport_uring.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

namespace runtime {

namespace {

// The operations of a socket, as tags of their completions.
constexpr unsigned kReceive = 1;
constexpr unsigned kSend = 2;

class UringTransport;

class UringSocket final : public uring::Handler, public uring::Deferred {
public:
    UringSocket(uring::Ring& ring, int fd, UringTransport& owner, std::size_t max_io)
        : ring_(ring), owner_(&owner), fd_(fd), max_io_(static_cast<std::uint32_t>(std::max<std::size_t>(max_io, 1))) {}
    ~UringSocket() override;

    // The Transport's calls.
    void start() { update_receive(); }
    TransportRead read(std::span<std::uint8_t> into);
    void send(const std::uint8_t* data, std::size_t length);
    std::size_t queued() const { return unsent_.size(); }
    void set_reading(bool on);
    void wake_reader();
    // The transport is gone: cancels what is in flight and closes the
    // socket once it has ended.
    void detach();

    void complete(unsigned tag, std::int32_t result, std::uint32_t flags) override;
    void run() override;

private:
    void received(std::int32_t result, std::uint32_t flags);
    void sent(std::int32_t result);
    bool has_unread() const { return !spilled_.empty() || !received_.empty(); }
    bool has_news() const { return has_unread() || (ended_ && !end_reported_); }
    bool receive_wanted() const;
    void update_receive();
    void arm_receive();
    void start_send();
    void notify_later();
    void finish_if_idle();

    uring::Ring& ring_;
    UringTransport* owner_;  // null once the transport is gone
    int fd_;
    // What one receive may take, and what may wait unread in the pool
    // before the receive stops: the reader's size of a read.
    std::uint32_t max_io_;
    uring::Received received_;   // in the Ring's buffers
    uring::BlockQueue spilled_;  // received before those, moved out while reading was off
    uring::BlockQueue unsent_;   // accepted by send() and not yet sent
    uring::Ring::Block* abandoned_ = nullptr;  // what a send in flight reads after detach()
    std::uint32_t sending_ = 0;  // bytes of the send in flight (0: none)
    short ended_ = 0;            // TransportRead::kEof or kError once the receive side ended
    bool end_reported_ = false;  // a read() returned <ended_>
    bool reading_ = true;        // set_reading()
    bool receive_armed_ = false;
    bool cancel_sent_ = false;  // the armed receive is being cancelled
    bool wake_ = false;         // wake_reader() asked for one transport_readable()
    bool failed_ = false;       // a send failed: the connection is gone
};

class UringTransport final : public Transport {
public:
    UringTransport(TransportUser& user, Side side) : user_(user), side_(side) {}
    ~UringTransport() override {
        if (socket_) socket_->detach();
    }
    void attach(UringSocket& socket) { socket_ = &socket; }

    TransportRead read(std::span<std::uint8_t> into) override { return socket_->read(into); }
    void send(const std::uint8_t* data, std::size_t length) override { socket_->send(data, length); }
    std::size_t queued() const override { return socket_->queued(); }
    void set_reading(bool on) override { socket_->set_reading(on); }
    void wake_reader() override { socket_->wake_reader(); }

    // Tells the tunnel; false when that destroyed this transport.
    bool tell(void (TransportUser::*call)(Side)) {
        Survival alive(*this);
        (user_.*call)(side_);
        return static_cast<bool>(alive);
    }

private:
    UringSocket* socket_ = nullptr;  // set by the factory; outlives this
    TransportUser& user_;
    Side side_;
};

UringSocket::~UringSocket() {
    ring_.drop(received_);
    spilled_.clear(ring_);
    unsent_.clear(ring_);
    if (abandoned_) ring_.free_block(abandoned_);
    if (fd_ >= 0) ring_.close(fd_);
}

TransportRead UringSocket::read(std::span<std::uint8_t> into) {
    TransportRead result;
    result.got = spilled_.take(ring_, into);
    result.got += ring_.take(received_, into.subspan(result.got));
    if (has_unread()) {
        notify_later();
    } else if (ended_) {
        result.closed = ended_;
        end_reported_ = true;
    }
    update_receive();
    return result;
}

void UringSocket::send(const std::uint8_t* data, std::size_t length) {
    if (failed_ || length == 0) return;
    // Behind a slow peer, a large block gathers the next small messages into
    // one send; otherwise the message's size will do.
    const std::size_t block_bytes = unsent_.empty() ? length : std::max(length, uring::Ring::kLargeBlockBytes);
    unsent_.append(ring_, data, length, block_bytes);
    if (sending_ == 0) start_send();
}

void UringSocket::set_reading(bool on) {
    reading_ = on;
    if (on && has_news()) notify_later();
    update_receive();
}

void UringSocket::wake_reader() {
    wake_ = true;
    ring_.defer(*this);
}

bool UringSocket::receive_wanted() const {
    return owner_ && reading_ && !ended_ && received_.bytes < max_io_;
}

// Cancels the receive at once when it is no longer wanted; arms it in run(),
// later in the turn but before its submit, so that reading switched off and
// on again within a turn costs nothing, and a receive never starts for a
// transport whose tunnel switches reading off before the turn ends.
void UringSocket::update_receive() {
    if (!reading_ && !received_.empty()) spilled_.append(ring_, received_);
    if (receive_wanted() && !receive_armed_) {
        if (!pending()) ring_.defer(*this);
    } else if (!receive_wanted() && receive_armed_ && !cancel_sent_) {
        ring_.cancel(*this, kReceive);
        cancel_sent_ = true;
    }
}

void UringSocket::arm_receive() {
    if (!receive_wanted() || receive_armed_) return;
    if (ring_.short_of_buffers()) {
        ring_.await_buffers(*this);
        return;
    }
    ring_.receive(*this, kReceive, fd_, max_io_);
    receive_armed_ = true;
    cancel_sent_ = false;
}

void UringSocket::start_send() {
    uring::Ring::Block* block = unsent_.front();
    sending_ = block->end - block->begin;
    ring_.send(*this, kSend, fd_, block->data() + block->begin, sending_);
}

void UringSocket::notify_later() { ring_.defer(*this); }

void UringSocket::detach() {
    owner_ = nullptr;
    unlink();
    ring_.drop(received_);
    spilled_.clear(ring_);
    // The block a send in flight reads from stays until it completes.
    abandoned_ = unsent_.clear(ring_, sending_ != 0);
    if (receive_armed_ || sending_) {
        ring_.cancel_all(fd_);
        ring_.adopt(this);
    } else {
        finish_if_idle();
    }
}

void UringSocket::finish_if_idle() {
    if (owner_ || receive_armed_ || sending_) return;
    ring_.close(fd_);
    fd_ = -1;
    ring_.release(this);
}

void UringSocket::complete(unsigned tag, std::int32_t result, std::uint32_t flags) {
    if (tag == kReceive) {
        received(result, flags);
    } else {
        sent(result);
    }
}

void UringSocket::received(std::int32_t result, std::uint32_t flags) {
    ring_.hold(received_, flags, result);
    if (result == 0) {
        ended_ = TransportRead::kEof;
    } else if (result < 0 && result != -ENOBUFS && result != -ECANCELED) {
        ended_ = TransportRead::kError;
    }
    if (!(flags & IORING_CQE_F_MORE)) {
        receive_armed_ = false;
        cancel_sent_ = false;
    }
    if (!owner_) {
        ring_.drop(received_);
        finish_if_idle();
        return;
    }
    if (reading_ && has_news()) notify_later();
    // Re-arms a receive that ended (its limit reached, the pool ran dry:
    // -ENOBUFS, the kernel stopped it), cancels one over max_io_, or moves
    // what arrived after reading was switched off out of the pool.
    update_receive();
}

void UringSocket::sent(std::int32_t result) {
    const std::uint32_t was_sending = sending_;
    sending_ = 0;
    if (!owner_) {
        ring_.free_block(abandoned_);
        abandoned_ = nullptr;
        finish_if_idle();
        return;
    }
    if (result < 0) {
        failed_ = true;
        unsent_.clear(ring_);
        owner_->tell(&TransportUser::transport_failed);
        return;
    }
    unsent_.consume(ring_, std::min(static_cast<std::uint32_t>(result), was_sending));
    if (!unsent_.empty()) start_send();
    if (result > 0) owner_->tell(&TransportUser::transport_drained);
}

// Deferred: one transport_readable() when there is something to report or
// the tunnel asked to be woken, then the receive is armed if wanted.
void UringSocket::run() {
    if (!owner_) return;
    const bool report = wake_ || (reading_ && has_news());
    wake_ = false;
    if (report && !owner_->tell(&TransportUser::transport_readable)) return;
    if (!pending()) arm_receive();
}

}  // namespace

std::unique_ptr<Transport> make_uring_transport(uring::Ring& ring, int fd, TransportUser& user, Side side,
                                                std::size_t max_io) {
    std::unique_ptr<UringTransport> transport(new (std::nothrow) UringTransport(user, side));
    UringSocket* socket = transport ? new (std::nothrow) UringSocket(ring, fd, *transport, max_io) : nullptr;
    if (!socket) {
        ::close(fd);
        return nullptr;
    }
    transport->attach(*socket);
    socket->start();
    return transport;
}

}  // namespace runtime
