// HTTP/1.1 message-head parsing (RFC 9112), pure: bytes in, a parsed head or a
// verdict out. No sockets, no clocks, no globals.
//
// The parser is resumable: the caller keeps every byte received so far in one
// contiguous buffer and calls parse() again with the grown buffer after each
// read. The parser remembers how far it has already looked for the end of the
// head, so re-feeding is linear overall. Once it returns Done, the string_views
// in the parsed head point into the caller's buffer and stay valid as long as
// those bytes do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace http1 {

struct Header {
    std::string_view name;
    std::string_view value;  // leading and trailing whitespace removed
};

struct Limits {
    std::size_t max_head_bytes = 16384;  // whole head incl. final CRLF -> 431
    std::size_t max_headers = 100;       // -> 431
    std::size_t max_line_bytes = 8192;   // request/status line or one header line, CRLF not counted -> 431 (414 for a request line)
};

enum class Status {
    Done,      // head complete: `consumed` bytes belong to it
    NeedMore,  // no complete head yet and no rule broken so far
    Error,     // reject: send `http_status`, log `reason`
};

struct Result {
    Status status = Status::NeedMore;
    std::size_t consumed = 0;     // Done: length of the head including the blank line
    int http_status = 0;          // Error: 400, 414, 431, 501, 505 ...
    std::string_view reason;      // Error: static text, e.g. "whitespace before header colon"
};

// Fields common to requests and responses, with the framing facts derived
// from them (RFC 9112 §6).
struct HeaderBlock {
    std::vector<Header> headers;

    // First header named <name> (case-insensitive), or nullptr.
    const Header* find(std::string_view name) const;
    // True when some header named <name> holds <token> in its comma-separated
    // list (both compared case-insensitively, surrounding whitespace ignored).
    bool has_token(std::string_view name, std::string_view token) const;
};

struct RequestHead : HeaderBlock {
    std::string_view method;
    std::string_view target;   // as sent: "/chat?room=1"
    std::string_view path;     // target up to '?'; absolute-form: the part after the authority ("/" when empty)
    std::string_view query;    // after '?', without it; empty when none
    int version_minor = 1;     // HTTP/1.<minor>
    std::optional<std::uint64_t> content_length;
    bool chunked = false;      // Transfer-Encoding ends in chunked
};

struct ResponseHead : HeaderBlock {
    int version_minor = 1;
    int status = 0;            // three digits, 100..599
    std::string_view reason;
    std::optional<std::uint64_t> content_length;
    bool chunked = false;
};

namespace detail {
// How far a parser has got through one head: the lines before <line_start>
// are validated, and the facts they established. Private to the parsers.
struct Progress {
    std::size_t line_start = 0;
    bool start_line_seen = false;
    int version_minor = 1;
    std::size_t fields = 0;      // header field lines so far
    unsigned hosts = 0;          // Host lines so far
    std::optional<std::uint64_t> content_length;
    bool transfer_encoding = false;
    bool chunked_last = false;   // the last transfer coding so far is chunked
    Result verdict;              // Done or Error once decided; repeated on later calls
};
}  // namespace detail

// Parses a request head. Strict RFC 9112: the method is a token; the version
// is HTTP/1.0 or HTTP/1.1 (another HTTP/x.y -> 505, anything else -> 400);
// lines end in CRLF (a bare CR, NUL, or other control byte -> 400); no
// whitespace between a header name and its colon (400); no obs-fold (400);
// conflicting or malformed Content-Length, or Content-Length together with
// Transfer-Encoding -> 400; a Transfer-Encoding not ending in chunked -> 400;
// over the limits -> 431 (414 for an over-long request line). Also (§3.2):
// an HTTP/1.1 request without Host, several Host lines or an invalid Host;
// a target that is not origin-form or absolute-form ("*" only with OPTIONS,
// authority-form only and always with CONNECT, whose path is the target);
// Transfer-Encoding in an HTTP/1.0 request -> 400. Empty lines before the
// request line are skipped and counted in `consumed` (§2.2).
//
// A verdict depends only on the bytes up to where it became decidable: an
// error is reported as soon as the offending line (or the byte past a limit)
// has arrived, and once Done or Error is returned every later call returns
// the same Result (refilling <out> with views into the new buffer on Done).
class RequestParser {
public:
    explicit RequestParser(Limits limits = {}) : limits_(limits) {}
    // <buffered> is every byte received so far on this message (a prefix of
    // the previous call's buffer plus new bytes). On Done, <out> holds views
    // into <buffered>.
    Result parse(std::string_view buffered, RequestHead& out);

private:
    Limits limits_;
    std::size_t scanned_ = 0;  // bytes already searched for the end of the head
    detail::Progress progress_;
};

// Parses a response head (status line "HTTP/1.x NNN reason"; the reason may
// be empty and its SP missing). Same rules as requests where they apply (not
// Host, not the leading empty lines); errors carry 502 since they come from a
// back end. Transfer codings not ending in chunked are no error here: chunked
// stays false and the body runs until the server closes (RFC 9112 §6.3).
class ResponseParser {
public:
    explicit ResponseParser(Limits limits = {}) : limits_(limits) {}
    Result parse(std::string_view buffered, ResponseHead& out);

private:
    Limits limits_;
    std::size_t scanned_ = 0;
    detail::Progress progress_;
};

// Case-insensitive ASCII comparison, for header names and tokens.
bool iequals(std::string_view a, std::string_view b);

// Whether <c> may appear in a token (tchar, RFC 9110 §5.6.2).
bool is_tchar(unsigned char c);

// Standard reason phrase for <status> ("Bad Request"), "Unknown" otherwise.
std::string_view reason_phrase(int status);

}  // namespace http1
