#include "runtime/admin.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <fmt/format.h>

#include "protocol/http1.h"

namespace runtime {

namespace {

constexpr std::int64_t kAdminTimeoutSeconds = 10;

}  // namespace

// One admin client: read a head, answer, close once the answer is flushed.
struct AdminServer::Connection {
    AdminServer* server = nullptr;
    bufferevent* bev = nullptr;
    http1::RequestParser parser{http1::Limits{8192, 100, 8192}};
    bool answered = false;

    ~Connection() {
        if (bev) bufferevent_free(bev);
        server->connections_.erase(this);
    }

    void respond(const AdminResponse& r, bool head_only) {
        std::string out = fmt::format(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n"
            // The dashboard may load and fetch from this listener only.
            "Content-Security-Policy: default-src 'self'\r\nX-Content-Type-Options: nosniff\r\n{}Connection: close\r\n\r\n",
            r.status, http1::reason_phrase(r.status), r.content_type, r.body.size(),
            r.allow.empty() ? std::string() : "Allow: " + r.allow + "\r\n");
        if (!head_only) out += r.body;
        bufferevent_write(bev, out.data(), out.size());
        answered = true;
        bufferevent_disable(bev, EV_READ);
    }

    static void on_read(bufferevent* bev, void* self) {
        auto* c = static_cast<Connection*>(self);
        if (c->answered) return;
        evbuffer* input = bufferevent_get_input(bev);
        std::size_t length = std::min<std::size_t>(evbuffer_get_length(input), 8193);
        std::string_view data(reinterpret_cast<const char*>(evbuffer_pullup(input, static_cast<ev_ssize_t>(length))), length);
        http1::RequestHead head;
        http1::Result result = c->parser.parse(data, head);
        if (result.status == http1::Status::NeedMore) return;
        if (result.status == http1::Status::Error) {
            c->respond(AdminResponse{result.http_status, "text/plain; charset=utf-8", std::string(result.reason) + "\n", {}}, false);
            return;
        }
        c->respond(c->server->handler_(head), head.method == "HEAD");
    }

    static void on_write(bufferevent*, void* self) {
        auto* c = static_cast<Connection*>(self);
        if (c->answered) delete c;
    }

    static void on_event(bufferevent*, short what, void* self) {
        if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) delete static_cast<Connection*>(self);
    }
};

AdminServer::AdminServer(event_base* base, obs::ErrorLog& log, Handler handler)
    : base_(base), log_(log), handler_(std::move(handler)) {}

AdminServer::~AdminServer() {
    close();
    while (!connections_.empty()) delete *connections_.begin();
}

void AdminServer::close() {
    if (listener_) evconnlistener_free(listener_);
    listener_ = nullptr;
    address_.clear();
}

bool AdminServer::listen(const config::SocketAddress& address, std::string& error) {
    if (listener_ && address.text == address_) return true;
    evconnlistener* l = evconnlistener_new_bind(base_, &AdminServer::on_accept, this,
                                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
                                                reinterpret_cast<const sockaddr*>(&address.storage),
                                                static_cast<int>(address.length));
    if (!l) {
        error = address.text + ": " + std::strerror(errno);
        return false;
    }
    close();
    listener_ = l;
    address_ = address.text;
    return true;
}

bool AdminServer::adopt(const config::SocketAddress& address, int fd, std::string& error) {
    evutil_make_socket_nonblocking(fd);
    evconnlistener* l = evconnlistener_new(base_, &AdminServer::on_accept, this,
                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!l) {
        error = address.text + ": cannot create listener";
        ::close(fd);
        return false;
    }
    close();
    listener_ = l;
    address_ = address.text;
    return true;
}

void AdminServer::on_accept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* self) {
    auto* server = static_cast<AdminServer*>(self);
    auto* c = new Connection();
    c->server = server;
    server->connections_.insert(c);
    c->bev = bufferevent_socket_new(server->base_, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        evutil_closesocket(fd);
        delete c;
        return;
    }
    bufferevent_setcb(c->bev, &Connection::on_read, &Connection::on_write, &Connection::on_event, c);
    timeval timeout{kAdminTimeoutSeconds, 0};
    bufferevent_set_timeouts(c->bev, &timeout, &timeout);
    bufferevent_enable(c->bev, EV_READ);
}

}  // namespace runtime
