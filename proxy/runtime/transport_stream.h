// A tunnel's side on an HTTP/2 stream: see transport_stream.cpp.
#pragma once

#include <memory>

#include <event2/bufferevent.h>

#include "runtime/transport.h"

namespace runtime {

// A transport over <end>, the Session's end of the bufferevent pair whose
// other end runtime/h2_connection.cpp feeds from one stream; the transport
// owns it from here on. <low_mark>: transport_drained() is reported each
// time the bytes queued towards the stream fall to it or below.
std::unique_ptr<Transport> make_stream_transport(bufferevent* end, TransportUser& user, Side side,
                                                 std::size_t low_mark);

}  // namespace runtime
