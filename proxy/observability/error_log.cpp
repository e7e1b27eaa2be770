#include "observability/error_log.h"

#include <chrono>

#include "observability/access_log.h"

namespace obs {

std::string_view to_string(Level level) {
    switch (level) {
        case Level::Debug: return "debug";
        case Level::Info: return "info";
        case Level::Warn: return "warn";
        case Level::Error: return "error";
    }
    return "?";
}

void ErrorLog::write(Level level, std::string_view message) {
    auto now = std::chrono::system_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    sink_.write(fmt::format("{} [{}] {}", format_time(ms), to_string(level), message));
}

}  // namespace obs
