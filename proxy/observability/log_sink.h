// Log output that never blocks an event loop: producers append whole lines
// to a queue; one writer thread moves them to the file. A path of "-" means
// the process's stdout (access log) or stderr (error log).
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace obs {

class LogSink {
public:
    // <path> "" = discard everything, "-" = <default_fd>, else a file opened
    // for appending (created 0640).
    LogSink(std::string path, int default_fd);
    ~LogSink();
    LogSink(const LogSink&) = delete;
    LogSink& operator=(const LogSink&) = delete;

    // Opens the destination; false (with <error> set) when the file cannot be opened.
    bool open(std::string& error);
    // Queues <line> (a trailing newline is added). Thread-safe, never blocks on I/O.
    void write(std::string_view line);
    // Reopens the file by name (after logrotate renamed it). Thread-safe.
    void reopen();
    // Writes everything queued so far and stops the writer thread.
    void close();
    bool enabled() const { return !path_.empty(); }

private:
    void run();
    int open_fd(std::string& error) const;

    std::string path_;
    int default_fd_;
    int fd_ = -1;                // owned by the writer thread once it runs
    std::mutex mutex_;
    bool running_ = false;       // guarded by mutex_
    std::condition_variable wake_;
    std::string pending_;        // lines waiting for the writer, guarded by mutex_
    bool reopen_requested_ = false;
    bool stopping_ = false;
    std::thread writer_;
};

}  // namespace obs
