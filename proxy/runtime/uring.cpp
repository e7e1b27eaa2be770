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
// Idle blocks a worker keeps, of each pooled size.
constexpr std::size_t kMaxIdleSmallBlocks = 256;
constexpr std::size_t kMaxIdleLargeBlocks = 64;
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
    receive_limit_ = probe_receive_limit();
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
    for (Block* block : free_small_blocks_) ::operator delete(block);
    for (Block* block : free_large_blocks_) ::operator delete(block);
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

void Ring::receive(Handler& handler, unsigned tag, int fd, std::uint32_t limit) {
    prepare_receive(entry(&handler, tag), fd, limit);
}

void Ring::prepare_receive(io_uring_sqe& sqe, int fd, std::uint32_t limit) const {
    if (receive_limit_) {
        io_uring_prep_recv_multishot(&sqe, fd, nullptr, 0, 0);
        // The field newer headers call optlen: the bytes after which the
        // multishot receive ends (Linux 6.17).
        sqe.file_index = limit;
    } else {
        io_uring_prep_recv(&sqe, fd, nullptr, 0, 0);
    }
    sqe.flags |= IOSQE_BUFFER_SELECT;
    sqe.buf_group = kBufferGroup;
}

// Whether the kernel takes a multishot receive's byte limit: older ones
// refuse the field at once with -EINVAL. Probed on a socket pair before the
// Ring serves anyone.
bool Ring::probe_receive_limit() {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) return false;
    receive_limit_ = true;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    prepare_receive(*sqe, fds[0], 1);
    sqe->user_data = 1;
    bool armed = io_uring_submit(&ring_) == 1;
    io_uring_cqe* cqe = nullptr;
    if (armed && io_uring_peek_cqe(&ring_, &cqe) == 0) {
        armed = cqe->res != -EINVAL;
        io_uring_cqe_seen(&ring_, cqe);
    }
    if (armed) {
        // Closing the pair's other end ends the receive (a 0-byte completion).
        ::close(fds[1]);
        fds[1] = -1;
        __kernel_timespec timeout{1, 0};
        if (io_uring_wait_cqe_timeout(&ring_, &cqe, &timeout) == 0) io_uring_cqe_seen(&ring_, cqe);
    }
    for (int fd : fds) {
        if (fd >= 0) ::close(fd);
    }
    return armed;
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

Ring::Block* Ring::new_block(std::size_t bytes) {
    // Never sized to fit a large request: BlockQueue spreads it over several
    // blocks. (Blocks sized to each send were freed to the worker thread's
    // malloc arena one by one, which trimmed its heap with an madvise() per
    // forwarded run in bulk transfers: scenario c cost 2x epoll's CPU.)
    const std::size_t capacity = bytes <= kSmallBlockBytes ? kSmallBlockBytes : kLargeBlockBytes;
    std::vector<Block*>* pool = capacity == kSmallBlockBytes ? &free_small_blocks_ : &free_large_blocks_;
    void* memory = nullptr;
    if (!pool->empty()) {
        memory = pool->back();
        pool->pop_back();
    } else {
        memory = ::operator new(sizeof(Block) + capacity);
    }
    return new (memory) Block{nullptr, static_cast<std::uint32_t>(capacity), 0, 0};
}

void Ring::free_block(Block* block) {
    if (block->capacity == kSmallBlockBytes && free_small_blocks_.size() < kMaxIdleSmallBlocks) {
        free_small_blocks_.push_back(block);
    } else if (block->capacity == kLargeBlockBytes && free_large_blocks_.size() < kMaxIdleLargeBlocks) {
        free_large_blocks_.push_back(block);
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

Ring::Block* BlockQueue::room(Ring& ring, std::size_t block_bytes) {
    if (tail_ && tail_->end < tail_->capacity) return tail_;
    Ring::Block* block = ring.new_block(block_bytes);
    if (tail_) {
        tail_->next = block;
    } else {
        head_ = block;
    }
    tail_ = block;
    return block;
}

void BlockQueue::append(Ring& ring, const std::uint8_t* data, std::size_t length, std::size_t block_bytes) {
    while (length > 0) {
        Ring::Block* block = room(ring, block_bytes);
        const std::size_t n = std::min<std::size_t>(length, block->capacity - block->end);
        std::memcpy(block->data() + block->end, data, n);
        block->end += static_cast<std::uint32_t>(n);
        bytes_ += n;
        data += n;
        length -= n;
    }
}

void BlockQueue::append(Ring& ring, Received& received) {
    while (!received.empty()) {
        Ring::Block* block = room(ring, received.bytes);
        const std::size_t n = ring.take(received, {block->data() + block->end, block->capacity - block->end});
        block->end += static_cast<std::uint32_t>(n);
        bytes_ += n;
    }
}

std::size_t BlockQueue::take(Ring& ring, std::span<std::uint8_t> into) {
    std::size_t copied = 0;
    while (head_ && copied < into.size()) {
        const std::size_t n = std::min<std::size_t>(head_->end - head_->begin, into.size() - copied);
        std::memcpy(into.data() + copied, head_->data() + head_->begin, n);
        copied += n;
        consume(ring, n);
    }
    return copied;
}

void BlockQueue::consume(Ring& ring, std::size_t n) {
    while (head_ && n > 0) {
        const std::size_t here = std::min<std::size_t>(n, head_->end - head_->begin);
        head_->begin += static_cast<std::uint32_t>(here);
        bytes_ -= here;
        n -= here;
        if (head_->begin == head_->end) {
            Ring::Block* done = head_;
            head_ = done->next;
            if (!head_) tail_ = nullptr;
            ring.free_block(done);
        }
    }
}

Ring::Block* BlockQueue::clear(Ring& ring, bool keep_front) {
    Ring::Block* kept = keep_front ? head_ : nullptr;
    for (Ring::Block* block = head_; block;) {
        Ring::Block* next = block->next;
        if (block != kept) ring.free_block(block);
        block = next;
    }
    if (kept) kept->next = nullptr;
    head_ = tail_ = nullptr;
    bytes_ = 0;
    return kept;
}

}  // namespace runtime::uring
