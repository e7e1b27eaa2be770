// The dashboard's files (proxy/runtime/dashboard/), compiled into the binary
// by a Makefile rule (scripts/embed-files generates the definitions), so the
// page ships with the executable: nothing to install next to it, nothing
// that can go missing or out of step with the binary after an upgrade.
#pragma once

#include <string_view>

namespace runtime {

struct DashboardAsset {
    std::string_view name;          // file name, e.g. "index.html"
    std::string_view content_type;
    std::string_view body;
};

// The embedded file named <name>, or nullptr.
const DashboardAsset* find_dashboard_asset(std::string_view name);

}  // namespace runtime
