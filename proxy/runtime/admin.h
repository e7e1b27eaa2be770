// The admin endpoint ([admin] listen) on the main thread's loop: the
// dashboard, /metrics, /healthz, /status and the back ends' drain/enable
// (routes in admin_route.h, handlers in admin_api.cpp). Each request gets one response and the connection
// closes; the request head goes through the same strict parser as clients'.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <string_view>

#include <event2/event.h>
#include <event2/listener.h>

#include "config/config.h"
#include "observability/error_log.h"
#include "protocol/http1.h"

namespace runtime {

struct AdminResponse {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    std::string allow;  // 405: the Allow header's value
};

class AdminServer {
public:
    using Handler = std::function<AdminResponse(const http1::RequestHead& request)>;

    AdminServer(event_base* base, obs::ErrorLog& log, Handler handler);
    ~AdminServer();
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    // Listens on <address> (replacing a previous address). False with <error>.
    bool listen(const config::SocketAddress& address, std::string& error);
    // Listens on <fd>, an inherited socket already listening on <address>
    // (binary upgrade). Takes <fd>; false with <error>.
    bool adopt(const config::SocketAddress& address, int fd, std::string& error);
    void close();
    const std::string& address() const { return address_; }
    int fd() const { return listener_ ? evconnlistener_get_fd(listener_) : -1; }

private:
    struct Connection;
    static void on_accept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* self);

    event_base* base_;
    [[maybe_unused]] obs::ErrorLog& log_;  // nothing to log: listen() returns its errors
    Handler handler_;
    evconnlistener* listener_ = nullptr;
    std::string address_;
    std::set<Connection*> connections_;  // open admin connections, freed with the server
};

}  // namespace runtime
