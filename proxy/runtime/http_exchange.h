// One plain HTTP/1.1 request and its response, proxied over a back-end
// connection that is new or taken from the worker's keep-alive pool. The
// session hands over the client connection once the request head is parsed
// and gets it back when the response is queued; meanwhile the exchange moves
// the bodies both ways (evbuffer moves, watermarks for backpressure), re-framing
// them as forward:: decides and validating chunked ones (chunked::Decoder).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "balance/chash.h"
#include "observability/access_log.h"
#include "protocol/chunked.h"
#include "protocol/http1.h"
#include "runtime/forward.h"
#include "runtime/generation.h"

namespace runtime {

class Worker;

// How an exchange leaves the client connection.
enum class HttpOutcome {
    KeepAlive,  // the whole response is queued: the next request may follow on the connection
    Close,      // a response (the back end's or our error) is queued: close once it is flushed
    Abort,      // the response cannot be completed: drop the client connection now
};

// The session's side of an exchange.
class HttpExchangeOwner {
public:
    // Called once when the exchange is over; the exchange must not be
    // destroyed from inside this call (it is still on the stack).
    virtual void exchange_finished(HttpOutcome outcome) = 0;

protected:
    ~HttpExchangeOwner() = default;
};

// What the exchange needs of a request once its head has left the client's input.
struct HttpRequest {
    std::string head;            // forward::build_http_request_head
    forward::Body body;          // how the client frames the request body
    bool head_method = false;    // HEAD: the response has no body
    int version_minor = 1;       // the client's HTTP/1.<minor>
    bool keep_alive = true;      // the client wants its connection kept
    const PoolRuntime* pool = nullptr;
    std::uint64_t key_hash = 0;
    std::size_t sticky = chash::kNone;  // the back end a valid sticky cookie names
};

class HttpExchange {
public:
    HttpExchange(Worker& worker, std::shared_ptr<const Generation> generation, HttpExchangeOwner& owner,
                 bufferevent* client, obs::AccessRecord& record, HttpRequest request);
    ~HttpExchange();
    HttpExchange(const HttpExchange&) = delete;
    HttpExchange& operator=(const HttpExchange&) = delete;

    // Picks a back end and sends the request. May finish at once (400 for a
    // chunked body already seen to be malformed, 502 with no back end).
    void start();

    // The session's client callbacks while the exchange owns the connection.
    void on_client_read();
    void on_client_write();
    void on_client_event(short what);

    // Graceful stop: the response still completes, then the connection closes.
    void shut_down() { keep_client_ = false; }
    // The client connection failed after the exchange finished.
    bool client_gone() const { return client_gone_; }

private:
    enum class Phase {
        Connecting,  // TCP connect to the back end in flight; connect timer
        Sending,     // request head sent; request body may still flow; no final response head yet;
                     // response timer once the request is complete, idle timer before
        Receiving,   // final response head relayed; response body flowing; idle timer
        Finished,    // the owner was told; nothing more happens
    };

    static void on_upstream_read(bufferevent* bev, void* self);
    static void on_upstream_write(bufferevent* bev, void* self);
    static void on_upstream_event(bufferevent* bev, short what, void* self);
    static void on_timer(evutil_socket_t, short, void* self);

    void connect_next();
    void open_connection();
    void connect_failed(const char* why, int error);
    void local_shortage(int error);
    void connected();
    void send_request();
    void retry_on_new_connection();

    void pump_request();
    void request_complete();
    void read_response_head();
    void pump_response(bool draining);
    void response_complete();
    void upstream_closed();

    void respond_error(int status, std::string_view reason);
    void abort(std::string_view reason, const char* close_by);
    void finish(HttpOutcome outcome);
    void discard_upstream();
    void release_backend();
    void arm_timer(std::int64_t ms);
    void touch();

    void write_upstream(const char* data, std::size_t n);
    void move_upstream(evbuffer* from, std::size_t n);

    Worker& worker_;
    std::shared_ptr<const Generation> generation_;
    HttpExchangeOwner& owner_;
    bufferevent* client_;
    obs::AccessRecord& record_;
    HttpRequest request_;
    Phase phase_ = Phase::Connecting;
    event* timer_ = nullptr;

    // The back end.
    bufferevent* upstream_ = nullptr;
    std::string upstream_key_;   // id and address: the keep-alive pool's key
    bool reused_ = false;        // upstream_ came from the keep-alive pool
    bool retried_ = false;       // a reused connection failed and the request went out again
    std::size_t index_ = chash::kNone;
    std::shared_ptr<BackendState> backend_state_;
    std::array<std::size_t, 3> tried_{};
    unsigned attempts_ = 0;
    std::int64_t connect_started_ms_ = 0;

    // Client -> back end.
    std::uint64_t request_remaining_ = 0;  // Length bodies
    chunked::Decoder request_chunks_;
    bool request_done_ = false;
    bool client_read_blocked_ = false;     // paused: the back end's output is full
    // What went to a reused connection, to send again on a new one if the
    // reused one turns out closed before answering (bounded; dropped past it).
    std::string replay_;
    bool replayable_ = false;

    // Back end -> client.
    http1::ResponseParser response_parser_;
    forward::Body response_in_;   // as the back end frames it
    forward::Body response_out_;  // as the client gets it
    std::uint64_t response_remaining_ = 0;
    chunked::Decoder response_chunks_;
    bool response_started_ = false;   // any byte came from the back end
    bool response_head_sent_ = false; // the final head went to the client
    bool upstream_read_blocked_ = false;  // paused: the client's output is full
    bool backend_reusable_ = false;
    bool keep_client_ = true;
    bool client_eof_ = false;   // the client half-closed after its request
    bool client_gone_ = false;
};

}  // namespace runtime
