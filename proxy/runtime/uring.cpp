#include "runtime/uring.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

namespace runtime::uring {

namespace {

constexpr std::uint16_t kNoBuffer = 0xffff;
constexpr unsigned kBufferGroup = 0;
constexpr std::uint64_t kTagMask = 7;
// Completions copied out of the queue per batch before they are dispatched.
constexpr unsigned kReapBatch = 64;
// Rounds of reap, deferred calls and submit in one turn before the loop's
// other events get their go.
constexpr int kMaxRounds = 4;
// Send blocks of this size are pooled; a worker keeps at most this many idle.
constexpr std::size_t kSendBlockBytes = 65536;
constexpr std::size_t kMaxIdleBlocks = 64;
// How long a submit that the kernel refused (out of memory) waits to retry.
constexpr timeval kSubmitRetry{0, 10000};

// Required setup flags: SINGLE_ISSUER (Linux 6.0) also guarantees the
// multishot receive; COOP_TASKRUN spares the interrupt a completion would
// otherwise send a running worker (it runs at the worker's next system call).
constexpr unsigned kSetupFlags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN |
                                 IORING_SETUP_SINGLE_ISSUER;

std::string explain(const char* call, int error) {
    std::string text = std::string(call) + ": " + std::strerror(error);
    if (error == EPERM) text += " (kernel.io_uring_disabled, or a seccomp filter)";
    if (error == EINVAL) text += " (the kernel lacks features wsgate needs: Linux 6.0 or later)";
    if (error == ENOMEM) text += " (out of memory or of locked memory: RLIMIT_MEMLOCK)";
    return text;
}

}  // namespace

void Deferred::unlink() {
    if (!prev_) return;
    prev_->next_ = next_;
    next_->prev_ = prev_;
    prev_ = next_ = nullptr;
}

DeferredList::~DeferredList() {
    while (pop()) {
    }
}

void DeferredList::push(Deferred& call) {
    call.unlink();
    call.prev_ = head_.prev_;
    call.next_ = &head_;
    head_.prev_->next_ = &call;
    head_.prev_ = &call;
}

Deferred* DeferredList::pop() {
    if (empty()) return nullptr;
    Deferred* call = head_.next_;
    call->unlink();
    return call;
}

void DeferredList::splice(DeferredList& other) {
    while (Deferred* call = other.pop()) push(*call);
}

std::unique_ptr<Ring> Ring::create(event_base* base, std::string& error, const Options& options) {
    if (options.buffers == 0 || options.buffers > 32768 || (options.buffers & (options.buffers - 1)) != 0 ||
        options.buffer_bytes == 0) {
        error = "io_uring: buffers must be a power of two up to 32768, of a non-zero size";
        return nullptr;
    }
    std::unique_ptr<Ring> ring(new (std::nothrow) Ring(base, options));
    if (!ring) {
        error = "io_uring: out of memory";
        return nullptr;
    }
    if (!ring->setup(error)) return nullptr;
    return ring;
}

Ring::Ring(event_base* base, const Options& options) : base_(base), options_(options) {}

bool Ring::setup(std::string& error) {
    io_uring_params params{};
    params.flags = kSetupFlags;
    params.cq_entries = options_.entries * 4;
    if (const int r = io_uring_queue_init_params(options_.entries, &ring_, &params); r < 0) {
        error = explain("io_uring_setup", -r);
        return false;
    }
    ring_ready_ = true;
    if (!(params.features & IORING_FEAT_NODROP)) {
        error = explain("io_uring_setup", EINVAL);
        return false;
    }
    if (!setup_buffers(error)) return false;
    completion_event_ = event_new(base_, ring_.ring_fd, EV_READ | EV_PERSIST, &Ring::on_turn, this);
    turn_event_ = event_new(base_, -1, 0, &Ring::on_turn, this);
    if (!completion_event_ || !turn_event_ || event_add(completion_event_, nullptr) != 0) {
        error = "io_uring: cannot create the loop's events";
        return false;
    }
    return true;
}

bool Ring::setup_buffers(std::string& error) {
    buffer_ring_bytes_ = options_.buffers * sizeof(io_uring_buf);
    void* ring_memory = mmap(nullptr, buffer_ring_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (ring_memory == MAP_FAILED) {
        error = explain("mmap", errno);
        return false;
    }
    buffer_ring_ = static_cast<io_uring_buf_ring*>(ring_memory);
    io_uring_buf_ring_init(buffer_ring_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(ring_memory);
    reg.ring_entries = options_.buffers;
    reg.bgid = kBufferGroup;
    if (const int r = io_uring_register_buf_ring(&ring_, &reg, 0); r != 0) {
        error = explain("io_uring_register_buf_ring", -r);
        return false;
    }
    // Pages are touched only where bytes arrive, so the pool's resident size
    // follows the traffic, not its capacity.
    buffer_memory_bytes_ = static_cast<std::size_t>(options_.buffers) * options_.buffer_bytes;
    void* memory = mmap(nullptr, buffer_memory_bytes_, PROT_READ | PROT_WRITE,
                        MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) {
        error = explain("mmap", errno);
        return false;
    }
    buffer_memory_ = static_cast<std::uint8_t*>(memory);
    links_.resize(options_.buffers);
    const int mask = io_uring_buf_ring_mask(options_.buffers);
    for (unsigned bid = 0; bid < options_.buffers; ++bid) {
        io_uring_buf_ring_add(buffer_ring_, buffer_memory_ + static_cast<std::size_t>(bid) * options_.buffer_bytes,
                              options_.buffer_bytes, static_cast<std::uint16_t>(bid), mask, static_cast<int>(bid));
    }
    io_uring_buf_ring_advance(buffer_ring_, static_cast<int>(options_.buffers));
    return true;
}

Ring::~Ring() {
    tearing_down_ = true;
    if (ring_ready_) cancel_all_and_wait();
    for (Handler* handler : released_) delete handler;
    released_.clear();
    // What is left did not complete in time: its sockets are closed here.
    for (Handler* orphan : orphans_) delete orphan;
    orphans_.clear();
    if (ring_ready_) io_uring_queue_exit(&ring_);
    if (completion_event_) event_free(completion_event_);
    if (turn_event_) event_free(turn_event_);
    if (buffer_memory_) munmap(buffer_memory_, buffer_memory_bytes_);
    if (buffer_ring_) munmap(buffer_ring_, buffer_ring_bytes_);
    for (SendBlock* block : free_blocks_) ::operator delete(block);
}

// The orphans' operations end as cancelled; their completions free them.
// Bounded: a kernel that never answered would otherwise hang the exit.
void Ring::cancel_all_and_wait() {
    io_uring_sqe& sqe = entry(nullptr, 0);
    io_uring_prep_cancel64(&sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
    submit();
    for (int wait = 0; wait < 100 && in_flight_ > 0; ++wait) {
        __kernel_timespec timeout{0, 10'000'000};
        io_uring_cqe* cqe = nullptr;
        io_uring_wait_cqe_timeout(&ring_, &cqe, &timeout);
        reap();
        if (queued_ > 0 || !overflow_.empty()) submit();
    }
}

io_uring_sqe& Ring::entry(Handler* handler, unsigned tag) {
    io_uring_sqe* sqe = overflow_.empty() ? io_uring_get_sqe(&ring_) : nullptr;
    if (sqe) {
        ++queued_;
    } else {
        sqe = &overflow_.emplace_back();
    }
    // The io_uring_prep_*() calls that fill it leave user_data alone.
    std::memset(sqe, 0, sizeof *sqe);
    sqe->user_data = handler ? reinterpret_cast<std::uintptr_t>(handler) | tag : 0;
    if (handler) ++in_flight_;
    schedule();
    return *sqe;
}

void Ring::receive(Handler& handler, unsigned tag, int fd) {
    io_uring_sqe& sqe = entry(&handler, tag);
    io_uring_prep_recv_multishot(&sqe, fd, nullptr, 0, 0);
    sqe.flags |= IOSQE_BUFFER_SELECT;
    sqe.buf_group = kBufferGroup;
}

void Ring::send(Handler& handler, unsigned tag, int fd, const std::uint8_t* data, std::size_t length) {
    io_uring_sqe& sqe = entry(&handler, tag);
    io_uring_prep_send(&sqe, fd, data, length, MSG_NOSIGNAL);
}

void Ring::cancel(Handler& handler, unsigned tag) {
    io_uring_sqe& sqe = entry(nullptr, 0);
    io_uring_prep_cancel64(&sqe, reinterpret_cast<std::uintptr_t>(&handler) | tag, 0);
    sqe.flags |= IOSQE_CQE_SKIP_SUCCESS;
}

void Ring::cancel_all(int fd) {
    io_uring_sqe& sqe = entry(nullptr, 0);
    io_uring_prep_cancel_fd(&sqe, fd, IORING_ASYNC_CANCEL_ALL);
    sqe.flags |= IOSQE_CQE_SKIP_SUCCESS;
}

void Ring::close(int fd) {
    if (tearing_down_) {
        ::close(fd);
        return;
    }
    io_uring_sqe& sqe = entry(nullptr, 0);
    io_uring_prep_close(&sqe, fd);
    sqe.flags |= IOSQE_CQE_SKIP_SUCCESS;
}

void Ring::defer(Deferred& call) {
    deferred_.push(call);
    schedule();
}

void Ring::await_buffers(Deferred& call) { starved_.push(call); }

void Ring::schedule() {
    if (in_turn_ || scheduled_ || tearing_down_) return;
    scheduled_ = true;
    event_active(turn_event_, EV_TIMEOUT, 0);
}

void Ring::on_turn(evutil_socket_t, short, void* self) { static_cast<Ring*>(self)->turn(); }

bool Ring::starved_can_run() const {
    // Starved receives re-arm once a quarter of the pool is back, so that a
    // trickle of recycled buffers does not re-arm and fail them again.
    return !starved_.empty() && buffers_in_kernel() >= std::max(1u, options_.buffers / 4);
}

void Ring::turn() {
    scheduled_ = false;
    in_turn_ = true;
    for (int round = 0; round < kMaxRounds; ++round) {
        reap();
        if (starved_can_run()) deferred_.splice(starved_);
        run_deferred();
        if (queued_ > 0 || !overflow_.empty()) submit();
        if (queued_ == 0 && overflow_.empty()) {
            for (Handler* handler : released_) delete handler;
            released_.clear();
        }
        if (deferred_.empty() && !starved_can_run() && io_uring_cq_ready(&ring_) == 0) break;
    }
    in_turn_ = false;
    // Work left after kMaxRounds waits for the next loop iteration, after
    // the loop has polled its sockets: a call that keeps deferring itself
    // cannot starve them. (Completions left make the ring readable;
    // released handlers left wait for a refused submit's retry.)
    if (!deferred_.empty() || starved_can_run()) {
        scheduled_ = true;
        const timeval now{0, 0};
        event_add(turn_event_, &now);
    }
}

void Ring::reap() {
    struct Completion {
        std::uint64_t user_data;
        std::int32_t result;
        std::uint32_t flags;
    };
    io_uring_cqe* cqes[kReapBatch];
    Completion batch[kReapBatch];
    for (;;) {
        // Completions the queue had no room for wait in the kernel
        // (IORING_FEAT_NODROP) until asked for.
        if (io_uring_cq_has_overflow(&ring_)) {
            ++overflows_;
            io_uring_get_events(&ring_);
        }
        const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, kReapBatch);
        if (n == 0) return;
        for (unsigned i = 0; i < n; ++i) batch[i] = {cqes[i]->user_data, cqes[i]->res, cqes[i]->flags};
        io_uring_cq_advance(&ring_, n);
        for (unsigned i = 0; i < n; ++i) {
            const Completion& c = batch[i];
            if (c.user_data == 0) continue;
            if (!(c.flags & IORING_CQE_F_MORE)) --in_flight_;
            auto* handler = reinterpret_cast<Handler*>(static_cast<std::uintptr_t>(c.user_data & ~kTagMask));
            handler->complete(static_cast<unsigned>(c.user_data & kTagMask), c.result, c.flags);
        }
    }
}

// Runs the calls deferred before this one started; those they defer run in
// the next round (or turn), so that a call deferring itself cannot spin here.
void Ring::run_deferred() {
    DeferredList now;
    now.splice(deferred_);
    while (Deferred* call = now.pop()) call->run();
}

void Ring::submit() {
    for (;;) {
        const int r = io_uring_submit(&ring_);
        ++submits_;
        if (r < 0 && r != -EINTR) {
            // -EBUSY: completions must be reaped first (the turn goes on);
            // -EAGAIN/-ENOMEM: the kernel is short of memory, retry shortly.
            if (r != -EBUSY && !tearing_down_) event_add(turn_event_, &kSubmitRetry);
            return;
        }
        queued_ = io_uring_sq_ready(&ring_);
        if (overflow_.empty()) return;
        std::size_t moved = 0;
        while (moved < overflow_.size()) {
            io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
            if (!sqe) break;
            *sqe = overflow_[moved++];
            ++queued_;
        }
        overflow_.erase(overflow_.begin(), overflow_.begin() + static_cast<std::ptrdiff_t>(moved));
    }
}

void Ring::hold(Received& queue, std::uint32_t flags, std::int32_t length) {
    if (!(flags & IORING_CQE_F_BUFFER)) return;
    const auto bid = static_cast<std::uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
    ++held_;
    if (length <= 0) {
        recycle(bid);
        return;
    }
    links_[bid] = {kNoBuffer, 0, static_cast<std::uint32_t>(length)};
    if (queue.tail == kNoBuffer) {
        queue.head = bid;
    } else {
        links_[queue.tail].next = bid;
    }
    queue.tail = bid;
    queue.bytes += static_cast<std::uint32_t>(length);
}

std::size_t Ring::take(Received& queue, std::span<std::uint8_t> into) {
    std::size_t copied = 0;
    while (queue.head != kNoBuffer && copied < into.size()) {
        const std::uint16_t bid = queue.head;
        BufferLink& link = links_[bid];
        const std::size_t n = std::min<std::size_t>(link.end - link.begin, into.size() - copied);
        std::memcpy(into.data() + copied,
                    buffer_memory_ + static_cast<std::size_t>(bid) * options_.buffer_bytes + link.begin, n);
        copied += n;
        link.begin += static_cast<std::uint32_t>(n);
        if (link.begin == link.end) {
            queue.head = link.next;
            if (queue.head == kNoBuffer) queue.tail = kNoBuffer;
            recycle(bid);
        }
    }
    queue.bytes -= static_cast<std::uint32_t>(copied);
    return copied;
}

void Ring::drop(Received& queue) {
    while (queue.head != kNoBuffer) {
        const std::uint16_t bid = queue.head;
        queue.head = links_[bid].next;
        recycle(bid);
    }
    queue = Received{};
}

void Ring::recycle(std::uint16_t bid) {
    io_uring_buf_ring_add(buffer_ring_, buffer_memory_ + static_cast<std::size_t>(bid) * options_.buffer_bytes,
                          options_.buffer_bytes, bid, io_uring_buf_ring_mask(options_.buffers), 0);
    io_uring_buf_ring_advance(buffer_ring_, 1);
    --held_;
    if (starved_can_run()) schedule();
}

// Every block has the same size and comes from the pool: a large send is
// split over several blocks. (Blocks sized to each send were freed to the
// worker thread's malloc arena one by one, which trimmed its heap with an
// madvise() per forwarded run in bulk transfers: scenario c.)
Ring::SendBlock* Ring::new_block() {
    if (!free_blocks_.empty()) {
        SendBlock* block = free_blocks_.back();
        free_blocks_.pop_back();
        *block = SendBlock{nullptr, static_cast<std::uint32_t>(kSendBlockBytes), 0, 0};
        return block;
    }
    void* memory = ::operator new(sizeof(SendBlock) + kSendBlockBytes);
    return new (memory) SendBlock{nullptr, static_cast<std::uint32_t>(kSendBlockBytes), 0, 0};
}

void Ring::free_block(SendBlock* block) {
    if (free_blocks_.size() < kMaxIdleBlocks) {
        free_blocks_.push_back(block);
    } else {
        ::operator delete(block);
    }
}

void Ring::adopt(Handler* orphan) { orphans_.insert(orphan); }

void Ring::release(Handler* handler) {
    orphans_.erase(handler);
    released_.push_back(handler);
    schedule();
}

}  // namespace runtime::uring
