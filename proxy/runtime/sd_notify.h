// systemd's readiness protocol (sd_notify(3)), implemented directly so that
// wsgate needs no libsystemd: one datagram to $NOTIFY_SOCKET per state change.
#pragma once

#include <string_view>

namespace runtime {

// Sends <state> ("READY=1", "RELOADING=1\nMONOTONIC_USEC=...", "STOPPING=1")
// to the socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract
// namespace). Returns false when the variable is unset or sending failed.
bool sd_notify(std::string_view state);

// "RELOADING=1\nMONOTONIC_USEC=<now>" as systemd's Type=notify-reload expects.
bool sd_notify_reloading();

}  // namespace runtime
