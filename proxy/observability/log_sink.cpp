#include "observability/log_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace obs {

namespace {

// Writes all of <data> to <fd>, retrying on EINTR and short writes. Errors
// other than EINTR drop the rest: a full disk must not stop the proxy.
void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

}  // namespace

LogSink::LogSink(std::string path, int default_fd) : path_(std::move(path)), default_fd_(default_fd) {}

LogSink::~LogSink() { close(); }

int LogSink::open_fd(std::string& error) const {
    if (path_ == "-") return default_fd_;
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) error = path_ + ": " + std::strerror(errno);
    return fd;
}

bool LogSink::open(std::string& error) {
    if (path_.empty()) return true;
    fd_ = open_fd(error);
    if (fd_ < 0) return false;
    running_ = true;
    writer_ = std::thread([this] { run(); });
    return true;
}

void LogSink::write(std::string_view line) {
    {
        std::lock_guard lock(mutex_);
        if (!running_ || stopping_) return;
        pending_.append(line);
        pending_.push_back('\n');
    }
    wake_.notify_one();
}

void LogSink::reopen() {
    if (path_ == "-") return;
    {
        std::lock_guard lock(mutex_);
        if (!running_) return;
        reopen_requested_ = true;
    }
    wake_.notify_one();
}

void LogSink::run() {
    std::string batch;
    for (;;) {
        bool reopen = false;
        bool stopping = false;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return !pending_.empty() || reopen_requested_ || stopping_; });
            batch.swap(pending_);
            reopen = reopen_requested_;
            reopen_requested_ = false;
            stopping = stopping_;
        }
        write_all(fd_, batch);
        batch.clear();
        if (reopen) {
            std::string error;
            int fd = open_fd(error);
            if (fd >= 0) {
                ::close(fd_);
                fd_ = fd;
            }
        }
        if (stopping) {
            std::lock_guard lock(mutex_);
            if (pending_.empty()) return;
        }
    }
}

void LogSink::close() {
    if (!writer_.joinable()) return;
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    writer_.join();
    if (fd_ != default_fd_) ::close(fd_);
    fd_ = -1;
    running_ = false;
}

}  // namespace obs
