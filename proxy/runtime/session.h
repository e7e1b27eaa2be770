// One client connection from accept to close: the handshake, the choice of a
// back end, and the frame-aware tunnel. The protocol decisions are made by the
// pure code (http1, ws, chash, forward); a Session only moves bytes, keeps
// timers and changes state, always through set_state().
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "net/proxy_protocol.h"
#include "observability/access_log.h"
#include "protocol/http1.h"
#include "protocol/websocket.h"
#include "runtime/generation.h"
#include "runtime/http_exchange.h"
#include "runtime/transport.h"

namespace runtime {

class Worker;
class H2Connection;

enum class SessionState {
    ReadingProxyHeader,  // listener speaks PROXY protocol: its v1/v2 header is not complete yet;
                         // handshake timer armed. On a TLS listener there is no bufferevent yet:
                         // the cleartext header is read from the raw socket (proxy_event_)
    ReadingRequest,    // client connected, request head incomplete; handshake timer armed
    Http2,             // the connection speaks HTTP/2: an H2Connection owns it (no timer of
                       // ours); each of its streams is a Session of its own
    AwaitingKeys,      // the token names a kid the route's JWK Set lacks and the refetch it asked
                       // for is due: the head stays in the client's input; poll timer armed until
                       // the fetch finishes or keys_deadline_ms, then the head is handled again
    Connecting,        // head valid, back end picked, TCP connect in flight; connect timer armed.
                       // A plain back end has no bufferevent: its raw event waits to write the head
    AwaitingResponse,  // head forwarded; waiting for the back end's response head; handshake timer armed
    ProxyingHttp,      // a plain HTTP request went to an HttpExchange, which owns the client's
                       // next response and its own timers; the session timer fires only to take
                       // the connection back once the exchange has finished
    Refusing,          // a response (ours or the back end's refusal) is flowing to the client;
                       // the session ends once it is flushed; handshake timer armed
    Open,              // 101 relayed; frames flow both ways; idle/heartbeat timer armed
    Closing,           // close frames in flight or a side is gone; linger timer armed
    Closed,            // both connections released; the access-log line is written
};

const char* to_string(SessionState state);

class Session final : private HttpExchangeOwner, private TransportUser {
public:
    Session(Worker& worker, std::shared_ptr<const Generation> generation);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Takes ownership of the accepted <fd>, accepted on <listener> (a
    // listener of this session's generation). May end (and free) the session.
    void start(int fd, const sockaddr* address, socklen_t length, const config::Listener& listener);
    // An HTTP/2 stream (runtime/h2_connection.cpp) as a session: <bev> is
    // the session's end of a bufferevent pair whose other end carries the
    // stream; the request head arrives through it as from a socket.
    // <peer_ip> and <client_text> are the connection's; <proto> is "h2" or
    // "h2c" for the access log.
    void start_stream(bufferevent* bev, const config::Listener& listener, const std::string& peer_ip,
                      const std::string& client_text, const char* proto);
    // The HTTP/2 connection this session handed its client to has ended.
    // Frees the session.
    void h2_finished();

    // Graceful stop: tunnels get close 1001 "going away" on both sides,
    // sessions still in their handshake are cut. May free the session.
    void shut_down();

    // Ends the session now, whatever its state (drain deadline passed).
    void terminate();

    // The id of the back end this session uses, or nullptr before one is picked.
    const std::string* backend_id() const;
    // A binary upgrade handed the listeners to a new process: a tunnel (or
    // a handshake in flight, once it is one) gets close 1001 "upgrade" at
    // <at_ms>; a plain HTTP exchange completes and its connection closes;
    // an idle keep-alive connection closes now. May free the session.
    void hand_off(std::int64_t at_ms);
    // A reload removed this session's back end, or <by_operator> drained it
    // (admin API): close the tunnel with 1012 "service restart" at <at_ms>
    // (worker clock); the access log says "backend removed" or "drain".
    void schedule_drain(std::int64_t at_ms, bool by_operator = false);
    // The operator enabled the back end again: an operator drain not yet
    // due is called off.
    void cancel_operator_drain();
    // The shared state of this session's back end, or nullptr.
    BackendState* backend_state() const { return backend_state_.get(); }

    SessionState state() const { return state_; }
    Session* next = nullptr;  // the worker's intrusive list
    Session* prev = nullptr;
    std::string per_ip_key;   // set by the worker when counted against max_connections_per_ip
    std::string subject_key;  // counted against max_sessions_per_subject (released by the worker)
    // Set by the worker before start(): accepted over server.max_connections
    // on a TLS listener and not counted in Shared::connections. Once admitted
    // (TLS handshake done, PROXY header read) the client gets 503.
    bool over_limit = false;
    std::string listener_address;  // the listener that accepted the client
    // An HTTP/2 stream's session: not a connection of its own (the
    // connection's accounting stays with the session that accepted it).
    bool h2_stream = false;

private:
    // One connection of the session (a socket, or an HTTP/2 stream) and
    // what the proxy knows of it.
    struct Endpoint {
        // The handshake: the client's bufferevent (a socket, TLS or not, or
        // the Session's end of an HTTP/2 stream's pair) and a TLS back end's.
        // A plain back end is connected and read without one: <fd> and <io>.
        // An open tunnel has neither: its <transport> owns the connection.
        bufferevent* bev = nullptr;
        event* io = nullptr;
        int fd = -1;
        short interest = 0;            // what <io> waits for (EV_READ, EV_WRITE)
        std::unique_ptr<Transport> transport;
        // Bytes of this peer not scanned yet: the start of an incomplete frame
        // header or control frame, or what the handshake read past the heads;
        // null when none (the common case, so it costs an idle tunnel one
        // pointer).
        std::unique_ptr<std::string> carry;
        std::int64_t last_rx_ms = 0;   // last frame received from it (heartbeat)
        std::int64_t ping_sent_ms = 0;
        std::array<std::uint8_t, 8> ping_payload{};
        bool read_paused = false;      // backpressure: the other side's queue is full
        bool read_done = false;        // EOF seen, or no more input wanted
        bool close_sent = false;       // a close frame went to this peer (relayed or ours)
        bool close_received = false;   // this peer sent a close frame
        bool gone = false;             // its connection is released
        bool flushing = false;         // released once its queue drains
        bool plain = false;            // a plain TCP socket (not TLS)
        bool h2 = false;               // client: an HTTP/2 stream, <bev> one end of a bufferevent pair
        bool ping_pending = false;     // a heartbeat ping waits for a frame boundary
        bool ping_outstanding = false; // our ping is unanswered
    };

    // What only the handshake, refusals and plain HTTP keep-alive need. It lives
    // on the heap and is freed when the tunnel opens, so an open tunnel does
    // not carry two parsers and the request's header copies (~400 bytes)
    // for its whole life.
    struct Handshake {
        explicit Handshake(std::size_t max_header_bytes)
            : request_parser(http1::Limits{max_header_bytes, 100, 8192}),
              response_parser(http1::Limits{64 * 1024, 100, 8192}) {}
        http1::RequestParser request_parser;
        http1::ResponseParser response_parser;
        std::string forwarded_head;
        std::size_t head_sent = 0;                 // plain back end: bytes of forwarded_head it took
        std::string response_bytes;                // plain back end: an incomplete response head so far
        std::string client_key;                    // Sec-WebSocket-Key, to check the back end's accept
        std::vector<http1::Header> added_headers;  // X-Auth-* from a verified token
        std::vector<std::string> added_storage;    // backing strings of added_headers
        std::vector<std::string> stripped_names;   // every X-Auth-* name the route may send
        std::string proxy_head;                    // PROXY before TLS: header bytes taken off the socket so far
        std::string peer_ip;                       // the connection's source (or the PROXY header's)
        timespec accepted_at{};                    // precise, for the handshake histogram
        std::int64_t connect_started_ms = 0;
        std::uint64_t key_hash = 0;
        std::size_t sticky_index = chash::kNone;   // the back end the pool's sticky cookie names
        unsigned attempt = 0;                      // connect attempts so far
        std::array<std::size_t, 3> tried{};        // back ends tried: the owner and up to two more
        std::uint64_t refusal_body_remaining = 0;  // bytes of a relayed refusal body still due
        bool refusal_until_eof = false;            // the refusal body ends when the back end closes
        bool lingering = false;                    // our response is out; draining the client's input
        // AwaitingKeys: the route's key source, its finished-fetch count when
        // the token was checked, and when the wait ends regardless.
        const jwks::Source* awaited_keys = nullptr;
        std::uint64_t keys_fetches_before = 0;
        std::int64_t keys_deadline_ms = 0;
        bool keys_awaited = false;                 // held once: the next check of this head gives the verdict
    };

    // One direction of the tunnel: frames from <src> go to <dst>.
    struct Flow {
        explicit Flow(ws::ScannerPolicy policy) : scanner(policy) {}
        ws::FrameScanner scanner;
        std::uint64_t messages = 0;
    };

    static void on_client_read(bufferevent* bev, void* self);
    static void on_client_write(bufferevent* bev, void* self);
    static void on_client_event(bufferevent* bev, short what, void* self);
    static void on_backend_read(bufferevent* bev, void* self);
    static void on_backend_event(bufferevent* bev, short what, void* self);
    static void on_timer(evutil_socket_t, short, void* self);
    static void on_backend_io(evutil_socket_t, short what, void* self);
    static void on_proxy_readable(evutil_socket_t, short, void* self);

    void set_state(SessionState next);
    void arm_timer(std::int64_t delay_ms);

    // Handshake.
    bool attach_client(int fd);
    void read_proxy_header();
    void read_proxy_header_before_tls();
    void use_proxy_source(const proxyproto::Result& result);
    void reject_proxy_header(std::string_view error);
    void admit_client();
    void read_request();
    bool detect_http2();
    void become_http2();
    bool authorize(const config::Route& route, const http1::RequestHead& request, std::string& claim_key);
    bool admit_subject(const config::RouteAuth& auth);
    void await_keys(const jwks::Source& keys, std::uint64_t fetches_before);
    void check_keys();
    void handle_request(const http1::RequestHead& request, std::size_t head_bytes);
    void try_connect();
    void connect_tls(int fd, const config::Backend& backend);
    void connect_plain(int fd, const config::Backend& backend);
    void send_head_plain();
    void connect_failed(const char* why, int error);
    void local_shortage(int error);
    void drop_backend_connection();
    void backend_connected();
    void read_response();
    void read_response_plain();
    enum class BackendAnswer { NeedMore, Upgrade, Refusal, Invalid };
    BackendAnswer take_response(std::string_view bytes, std::size_t& head_bytes, bool& deflate);
    void start_refusal_relay();
    bool adopt_backend_bufferevent();
    void refuse(int status, std::string_view reason, std::string_view extra_headers = {});
    void relay_refusal_body();

    // Plain HTTP (session_http.cpp).
    void start_http(const http1::RequestHead& request, std::size_t head_bytes);
    void exchange_finished(HttpOutcome outcome) override;
    void after_http();
    void await_next_request();
    void write_access_line();

    // Tunnel (tunnel.cpp): the policy, over each side's Transport.
    // <client_head>: the 101 for a socket client, sent by its transport
    // (other clients have theirs in their bufferevent's output already).
    void open_tunnel(bool deflate, std::string_view client_head = {});
    std::unique_ptr<Transport> make_transport(Side side);
    std::unique_ptr<Transport> make_plain_transport(int fd, Side side, std::size_t max_io);
    void transport_readable(Side side) override;
    void transport_drained(Side side) override;
    void transport_failed(Side side) override;
    void tunnel_read(Side side);
    bool scan(Side from, const std::uint8_t* data, std::size_t length);
    void forward(Side from, const std::uint8_t* data, std::size_t length);
    void update_reading(Side side);
    void count_forwarded(Side from, const ws::Step& step, std::int64_t now);
    bool handle_control_frame(Side from, const std::uint8_t* frame, const ws::FrameHeader& header);
    void send_ping(Side to);
    void send_close(Side to, std::uint16_t code, std::string_view reason);
    void protocol_failure(Side offender, std::uint16_t code, std::string_view reason);
    void peer_gone(Side side, const char* reason);
    void tunnel_peer_closed(Side side, short what);
    void send_to(Side to, const std::uint8_t* data, std::size_t length);
    std::size_t output_length(Side side) const;
    bool awaits_close_reply(Side side, short what) const;
    void resume_survivor(Side side);
    void on_tunnel_timer();
    std::int64_t next_tunnel_deadline() const;
    bool monitors(Side side) const;

    // A plain back end's socket during the handshake (session_backend.cpp).
    void set_backend_interest(short want);
    void release_backend_socket();

    // Ending.
    void begin_closing(std::string_view reason, const char* close_by, int close_code);
    void maybe_finish_closing();
    void release(Side side);
    void flush_and_release(Side side);
    void lingering_close();
    void finish();

    Endpoint& endpoint(Side side) { return side == Side::Client ? client_ : backend_; }
    Flow& flow_from(Side side) { return side == Side::Client ? from_client_ : from_backend_; }
    static Side other(Side side) { return side == Side::Client ? Side::Backend : Side::Client; }

    Worker& worker_;
    std::shared_ptr<const Generation> generation_;
    SessionState state_ = SessionState::ReadingRequest;
    event* timer_ = nullptr;
    // PROXY protocol on a TLS listener: the raw socket until its header is read.
    event* proxy_event_ = nullptr;
    int proxy_fd_ = -1;
    Endpoint client_;
    Endpoint backend_;
    Flow from_client_;
    Flow from_backend_;

    std::unique_ptr<Handshake> handshake_;  // null once the tunnel is open
    std::string client_ip_;      // the client as resolved (trusted X-Forwarded-For), for hashing, limits, logs
    const config::Listener* listener_ = nullptr;
    const PoolRuntime* pool_ = nullptr;
    std::size_t backend_index_ = chash::kNone;
    std::shared_ptr<BackendState> backend_state_;
    std::unique_ptr<HttpExchange> http_;        // ProxyingHttp: the exchange in charge
    std::unique_ptr<H2Connection> h2_;          // Http2: the connection in charge
    bool h2_possible_ = true;                   // the first request may still turn out to be HTTP/2
    HttpOutcome http_outcome_ = HttpOutcome::Close;
    bool keepalive_wait_ = false;               // ReadingRequest after a response: no byte of the next request yet
    bool operator_drain_ = false;               // drain_at_ms_ was set by an admin drain, not a reload
    bool client_spoke_ = false;                 // a byte arrived from the client (else: an empty connection)

    std::int64_t started_ms_ = 0;
    std::int64_t last_activity_ms_ = 0;  // last frame either way, ours excluded
    std::int64_t drain_at_ms_ = INT64_MAX;  // close with 1012 then (reload removed the back end)
    std::uint16_t drain_code_ = ws::close_code::service_restart;  // 1001 after hand_off()
    std::int64_t expire_at_ms_ = INT64_MAX;  // close with 1008 then (close_on_expiry: the token's exp)
    obs::AccessRecord record_;
};

}  // namespace runtime
