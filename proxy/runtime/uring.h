// One io_uring per worker thread, driven from the worker's libevent loop:
// what the io_uring transport (transport_uring.cpp) stands on.
//
// Completions reach the loop through the ring's own descriptor, which is
// readable while the completion queue holds entries: a persistent libevent
// read event on it costs no system call of its own. (An eventfd costs a
// read() per wake-up: about 10 % more CPU per message in an echo over 100
// sockets.) Submissions
// are batched: the first request of a loop turn makes the Ring's turn event
// active, and when it runs, one io_uring_enter() submits everything the turn
// queued; completions the kernel posted during that call are reaped at once.
//
// Receives use a ring of provided buffers (IOSQE_BUFFER_SELECT, one buffer
// group per Ring): the kernel picks a buffer only when bytes arrive, so an
// idle socket holds none. Sends copy into blocks from a per-Ring pool.
//
// Everything here runs on the thread that created the Ring
// (IORING_SETUP_SINGLE_ISSUER): a worker creates its Ring in its own thread.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include <event2/event.h>
#include <liburing.h>

namespace runtime::uring {

struct Options {
    unsigned entries = 1024;        // submission queue; the completion queue has 4 times as many
    unsigned buffers = 256;         // provided receive buffers: a power of two, at most 32768
    unsigned buffer_bytes = 16384;  // size of each
};

// What a submitted operation reports to.
class Handler {
public:
    virtual ~Handler() = default;
    // One completion of an operation submitted with <tag> (1..7): <result>
    // and <flags> as in its CQE. The last one of an operation lacks
    // IORING_CQE_F_MORE. Called only from the Ring's turn, never from
    // inside a call into the Ring.
    virtual void complete(unsigned tag, std::int32_t result, std::uint32_t flags) = 0;
};

// A call the Ring makes later in this loop turn (Ring::defer), or once
// receive buffers are back after the pool ran dry (Ring::await_buffers).
// A Deferred is in at most one of those lists; destroying it unlinks it.
class Deferred {
public:
    Deferred() = default;
    Deferred(const Deferred&) = delete;
    Deferred& operator=(const Deferred&) = delete;
    virtual void run() = 0;
    bool pending() const { return prev_ != nullptr; }
    void unlink();

protected:
    ~Deferred() { unlink(); }

private:
    friend class DeferredList;
    Deferred* prev_ = nullptr;
    Deferred* next_ = nullptr;
};

// An intrusive FIFO of Deferred calls.
class DeferredList {
public:
    DeferredList() { head_.prev_ = head_.next_ = &head_; }
    DeferredList(const DeferredList&) = delete;
    DeferredList& operator=(const DeferredList&) = delete;
    ~DeferredList();
    bool empty() const { return head_.next_ == &head_; }
    // Appends <call> (moved from another list if it is in one).
    void push(Deferred& call);
    Deferred* pop();
    // Moves every call of <other> to the end of this list.
    void splice(DeferredList& other);

private:
    struct Head final : Deferred {
        void run() override {}
    };
    Head head_;
};

// A socket's completed receives, in arrival order: buffers of the Ring's
// pool chained through the Ring's table, so that holding none costs 8 bytes.
struct Received {
    std::uint16_t head = 0xffff;
    std::uint16_t tail = 0xffff;
    std::uint32_t bytes = 0;
    bool empty() const { return bytes == 0; }
};

class Ring {
public:
    // A Ring whose turn runs on <base>, or null with <error> set when
    // io_uring cannot be set up here (old kernel, kernel.io_uring_disabled,
    // seccomp, out of locked memory).
    static std::unique_ptr<Ring> create(event_base* base, std::string& error, const Options& options = {});

    // Cancels what is in flight and waits for it, then closes the sockets
    // of the orphans it still owns. Every transport on it must be gone.
    ~Ring();
    Ring(const Ring&) = delete;
    Ring& operator=(const Ring&) = delete;

    // Operations, submitted with everything else queued this turn. Their
    // completions go to <handler> with <tag> (1..7). They never fail here:
    // entries that do not fit the submission queue wait in memory for the
    // turn's submit, and a failed operation reports its error in its CQE.
    //
    // A receive on <fd> into the provided buffers: multishot, ending after
    // about <limit> bytes (one buffer more at most), so that a socket takes
    // no more from the kernel than its reader asked for. A kernel without
    // that limit gets a single-shot receive (one buffer) instead.
    void receive(Handler& handler, unsigned tag, int fd, std::uint32_t limit);
    // A send of <length> bytes at <data>, which must stay put until it completes.
    void send(Handler& handler, unsigned tag, int fd, const std::uint8_t* data, std::size_t length);
    // Cancels <handler>'s operation <tag> (its last CQE then says -ECANCELED
    // unless it completed first). The cancel itself reports nothing.
    void cancel(Handler& handler, unsigned tag);
    // Cancels every operation on <fd>; reports nothing.
    void cancel_all(int fd);
    // Closes <fd> in the turn's submit (at once while the Ring is torn down);
    // reports nothing.
    void close(int fd);

    void defer(Deferred& call);
    // Whether a receive should wait (await_buffers) rather than be armed:
    // the kernel has less than an eighth of the pool, or others already wait.
    bool short_of_buffers() const {
        return !starved_.empty() || buffers_in_kernel() < std::max(1u, options_.buffers / 8);
    }
    // <call> runs once a quarter of the pool is back.
    void await_buffers(Deferred& call);

    // The provided buffer a completion names (IORING_CQE_F_BUFFER in
    // <flags>) joins <queue> with <length> bytes (none: recycled at once).
    void hold(Received& queue, std::uint32_t flags, std::int32_t length);
    // Copies from the front of <queue> into <into>, recycling the buffers
    // it empties. Returns the bytes copied.
    std::size_t take(Received& queue, std::span<std::uint8_t> into);
    // Recycles every buffer of <queue>.
    void drop(Received& queue);

    // A block of bytes (to send, or received and moved out of the pool):
    // <data> holds <capacity> bytes, of which [begin, end) are queued.
    struct Block {
        Block* next = nullptr;
        std::uint32_t capacity = 0;
        std::uint32_t begin = 0;
        std::uint32_t end = 0;
        std::uint8_t* data() { return reinterpret_cast<std::uint8_t*>(this + 1); }
    };
    // Two pooled sizes: a small block for a message to a socket that keeps
    // up, a large one to gather messages behind a slow one.
    static constexpr std::size_t kSmallBlockBytes = 2048;
    static constexpr std::size_t kLargeBlockBytes = 16384;
    // A pooled block: the small size when <bytes> fits it, else the large
    // one (a larger request spans several blocks).
    Block* new_block(std::size_t bytes);
    void free_block(Block* block);

    // Owns <orphan> (a socket whose transport is gone but whose operations
    // are still in flight) until it calls release(); deletes it if the Ring
    // goes first.
    void adopt(Handler* orphan);
    // Deletes <handler>, which has no operation in flight, after this
    // turn's submit: entries queued for it (a cancel) may name it until
    // then. An adopted orphan is disowned first.
    void release(Handler* handler);

    // For tests and measurements.
    std::uint64_t submits() const { return submits_; }  // io_uring_enter calls that submitted
    std::uint64_t overflows() const { return overflows_; }  // reaps that found completions in the kernel's overflow list
    unsigned buffers_in_kernel() const { return options_.buffers - held_; }
    const Options& options() const { return options_; }
    std::size_t orphans() const { return orphans_.size(); }
    bool receive_limit() const { return receive_limit_; }  // multishot receives end after their limit

private:
    Ring(event_base* base, const Options& options);
    bool setup(std::string& error);
    bool setup_buffers(std::string& error);
    bool probe_receive_limit();
    void prepare_receive(io_uring_sqe& sqe, int fd, std::uint32_t limit) const;
    static void on_turn(evutil_socket_t, short, void* self);
    // An entry to fill, its completions going to <handler> with <tag> (null:
    // ignored, and not reported on success).
    io_uring_sqe& entry(Handler* handler, unsigned tag);
    void turn();
    void schedule();
    bool starved_can_run() const;
    void reap();
    void run_deferred();
    void submit();
    void recycle(std::uint16_t bid);
    void cancel_all_and_wait();

    struct BufferLink {
        std::uint16_t next = 0xffff;
        std::uint32_t begin = 0;  // first byte not yet taken
        std::uint32_t end = 0;    // bytes received
    };

    event_base* base_;
    Options options_;
    io_uring ring_{};
    bool ring_ready_ = false;
    event* completion_event_ = nullptr;  // the ring's descriptor is readable
    event* turn_event_ = nullptr;        // made active when work is queued outside a turn
    bool in_turn_ = false;
    bool scheduled_ = false;
    bool tearing_down_ = false;
    bool receive_limit_ = false;
    std::vector<io_uring_sqe> overflow_;  // entries that did not fit the submission queue
    unsigned queued_ = 0;                 // entries queued since the last submit
    std::uint64_t in_flight_ = 0;         // operations with a handler whose last CQE is due
    std::uint64_t submits_ = 0;
    std::uint64_t overflows_ = 0;
    DeferredList deferred_;
    DeferredList starved_;  // waiting for receive buffers

    io_uring_buf_ring* buffer_ring_ = nullptr;
    std::size_t buffer_ring_bytes_ = 0;
    std::uint8_t* buffer_memory_ = nullptr;
    std::size_t buffer_memory_bytes_ = 0;
    std::vector<BufferLink> links_;
    unsigned held_ = 0;  // buffers whose completions were reaped and that are not yet recycled

    std::vector<Block*> free_small_blocks_;
    std::vector<Block*> free_large_blocks_;
    std::unordered_set<Handler*> orphans_;
    std::vector<Handler*> released_;
};

// Bytes in a chain of a Ring's blocks: a socket's unsent bytes, or bytes it
// received and moved out of the buffer pool. Empty, it holds no memory.
class BlockQueue {
public:
    BlockQueue() = default;
    BlockQueue(const BlockQueue&) = delete;
    BlockQueue& operator=(const BlockQueue&) = delete;
    bool empty() const { return bytes_ == 0; }
    std::size_t size() const { return bytes_; }
    Ring::Block* front() const { return head_; }
    // Copies <length> bytes to the end: into the last block's room, then
    // into new blocks of at least <block_bytes>.
    void append(Ring& ring, const std::uint8_t* data, std::size_t length, std::size_t block_bytes);
    // Moves every byte of <received> to the end, recycling its buffers.
    void append(Ring& ring, Received& received);
    // Copies from the front into <into> and drops what it copied.
    std::size_t take(Ring& ring, std::span<std::uint8_t> into);
    // Drops <n> bytes from the front.
    void consume(Ring& ring, std::size_t n);
    // Frees every block; with <keep_front>, the first one stays allocated,
    // out of the queue, for whoever still reads it (a send in flight).
    Ring::Block* clear(Ring& ring, bool keep_front = false);

private:
    Ring::Block* room(Ring& ring, std::size_t block_bytes);

    Ring::Block* head_ = nullptr;
    Ring::Block* tail_ = nullptr;
    std::size_t bytes_ = 0;
};

}  // namespace runtime::uring
