// The error log: leveled, timestamped lines through a LogSink.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include "observability/log_sink.h"

namespace obs {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };

std::string_view to_string(Level level);

class ErrorLog {
public:
    ErrorLog(LogSink& sink, Level min_level) : sink_(sink), min_level_(static_cast<int>(min_level)) {}

    void set_level(Level level) { min_level_.store(static_cast<int>(level), std::memory_order_relaxed); }
    bool enabled(Level level) const {
        return static_cast<int>(level) >= min_level_.load(std::memory_order_relaxed);
    }

    template <typename... Args>
    void log(Level level, fmt::format_string<Args...> format, Args&&... args) {
        if (!enabled(level)) return;
        write(level, fmt::format(format, std::forward<Args>(args)...));
    }

    void write(Level level, std::string_view message);

private:
    LogSink& sink_;
    std::atomic<int> min_level_;
};

}  // namespace obs
