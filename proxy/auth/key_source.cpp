#include "auth/key_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace jwks {

namespace {

FileStamp stamp_from(const struct stat& st) {
    return FileStamp{st.st_dev, st.st_ino,
                     static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                     static_cast<std::int64_t>(st.st_size)};
}

}  // namespace

std::optional<FileStamp> stamp_of(const std::string& path) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) return std::nullopt;
    return stamp_from(st);
}

std::variant<LoadedFile, std::string> load_file(const std::string& path, const Limits& limits) {
    // The stamp comes from the descriptor that is read, so a rename between
    // stat and read cannot pair one file's stamp with another's content.
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return "cannot read " + path + ": " + std::strerror(errno);
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        const int error = errno;
        close(fd);
        return "cannot read " + path + ": " + (S_ISREG(st.st_mode) ? std::strerror(error) : "not a regular file");
    }
    if (static_cast<std::uint64_t>(st.st_size) > limits.max_bytes) {
        close(fd);
        return path + ": larger than " + std::to_string(limits.max_bytes) + " bytes";
    }
    std::string text;
    char buffer[16384];
    for (;;) {
        const ssize_t n = read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int error = errno;
            close(fd);
            return "cannot read " + path + ": " + std::strerror(error);
        }
        if (n == 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
        if (text.size() > limits.max_bytes) {
            close(fd);
            return path + ": larger than " + std::to_string(limits.max_bytes) + " bytes";
        }
    }
    close(fd);
    auto parsed = parse(text, limits);
    if (auto* error = std::get_if<std::string>(&parsed)) return path + ": " + *error;
    return LoadedFile{std::get<KeySet>(std::move(parsed)), stamp_from(st)};
}

}  // namespace jwks
