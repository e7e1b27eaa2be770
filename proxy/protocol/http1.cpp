// HTTP/1.1 head parsing (RFC 9112 §2-§6).
//
// The head is read one line at a time. A line is validated as soon as its LF
// arrives, and the limits are enforced on the bytes of the line still being
// received, so every verdict depends only on the bytes before the point where
// it became decidable: a prefix of the input that is rejected is rejected with
// the same status and reason however the rest of the input continues, and
// feeding the input in pieces gives the same result as feeding it whole.
// When the blank line arrives the head is walked once more to fill the caller's
// struct with views into the current buffer, since earlier calls may have
// seen the bytes at another address.
#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "protocol/http1.h"

namespace http1 {

namespace {

// A broken rule: the status a request gets for it (a response always gets
// 502, RFC 9110 §15.6.3) and the static text that names it.
struct Violation {
    int request_status;
    std::string_view reason;
};

constexpr Violation kHeadTooLarge{431, "head too large"};
constexpr Violation kRequestLineTooLong{414, "request line too long"};
constexpr Violation kStatusLineTooLong{502, "status line too long"};
constexpr Violation kFieldLineTooLong{431, "header line too long"};
constexpr Violation kTooManyFields{431, "too many header fields"};
constexpr Violation kBareLf{400, "bare LF line ending"};
constexpr Violation kBareCr{400, "bare CR"};
constexpr Violation kBadMethod{400, "invalid method"};
constexpr Violation kBadRequestLine{400, "malformed request line"};
constexpr Violation kBadTargetChar{400, "invalid character in request target"};
constexpr Violation kBadTarget{400, "invalid request target"};
constexpr Violation kAsteriskNotOptions{400, "asterisk-form target without OPTIONS"};
constexpr Violation kConnectNotAuthority{400, "CONNECT target not in authority-form"};
constexpr Violation kBadVersion{400, "malformed HTTP version"};
constexpr Violation kUnsupportedVersion{505, "unsupported HTTP version"};
constexpr Violation kBadStatusLine{502, "malformed status line"};
constexpr Violation kBadStatusCode{502, "invalid status code"};
constexpr Violation kBadReasonPhrase{502, "invalid character in reason phrase"};
constexpr Violation kObsFold{400, "obs-fold line folding"};
constexpr Violation kSpaceBeforeColon{400, "whitespace before header colon"};
constexpr Violation kBadFieldName{400, "invalid header name"};
constexpr Violation kEmptyFieldName{400, "empty header name"};
constexpr Violation kMissingColon{400, "missing colon in header line"};
constexpr Violation kNulInValue{400, "NUL in header value"};
constexpr Violation kCtlInValue{400, "control character in header value"};
constexpr Violation kBadContentLength{400, "invalid Content-Length"};
constexpr Violation kConflictingContentLength{400, "conflicting Content-Length"};
constexpr Violation kLengthAndEncoding{400, "Content-Length with Transfer-Encoding"};
constexpr Violation kChunkedNotLast{400, "Transfer-Encoding does not end in chunked"};
constexpr Violation kChunkedTwice{400, "chunked is not the final transfer coding"};
constexpr Violation kEncodingInHttp10{400, "Transfer-Encoding in HTTP/1.0 request"};
constexpr Violation kMissingHost{400, "missing Host"};
constexpr Violation kMultipleHosts{400, "multiple Host headers"};
constexpr Violation kBadHost{400, "invalid Host"};

enum class Role { Request, Response };

Result error(const Violation& v, Role role) {
    return {Status::Error, 0, role == Role::Request ? v.request_status : 502, v.reason};
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_ows(char c) { return c == ' ' || c == '\t'; }
// VCHAR and obs-text: what a field value or reason phrase may hold besides SP and HTAB.
bool is_visible_or_obs(char c) { return static_cast<unsigned char>(c) > 0x20 && c != 0x7f; }

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
    return s;
}

std::size_t saturating_add(std::size_t a, std::size_t b) {
    return a > std::numeric_limits<std::size_t>::max() - b ? std::numeric_limits<std::size_t>::max() : a + b;
}

// ---- Lines ----------------------------------------------------------------

struct LineStep {
    enum Kind { Complete, Incomplete, Broken } kind;
    std::string_view content;             // Complete: the line without its CRLF
    const Violation* violation = nullptr; // Broken
};

// Takes the line of <buf> that starts at <line_start>, resuming the search
// for its LF at <scanned>. The LF must come early enough that the line holds
// at most <limits.max_line_bytes> bytes before its CRLF (else <too_long>) and
// the head ends within <limits.max_head_bytes> (else 431): once every byte
// where it could still be is present and it is not, the verdict is final.
// On Complete, <line_start> and <scanned> move past the line.
LineStep next_line(std::string_view buf, const Limits& limits, const Violation& too_long, std::size_t& line_start,
                   std::size_t& scanned) {
    const std::size_t line_cap = saturating_add(line_start, saturating_add(limits.max_line_bytes, 2));
    const std::size_t head_cap = limits.max_head_bytes;
    const std::size_t window_end = std::min(line_cap, head_cap);
    const std::size_t from = std::max(scanned, line_start);
    const std::size_t to = std::min(window_end, buf.size());
    const void* lf = from < to ? std::memchr(buf.data() + from, '\n', to - from) : nullptr;
    if (lf == nullptr) {
        scanned = std::max(from, to);
        if (buf.size() < window_end) return {LineStep::Incomplete, {}};
        return {LineStep::Broken, {}, line_cap <= head_cap ? &too_long : &kHeadTooLarge};
    }
    const std::size_t at = static_cast<std::size_t>(static_cast<const char*>(lf) - buf.data());
    if (at == line_start || buf[at - 1] != '\r') return {LineStep::Broken, {}, &kBareLf};
    std::string_view content = buf.substr(line_start, at - 1 - line_start);
    line_start = scanned = at + 1;
    // RFC 9112 §2.2: a CR anywhere but before the LF is not a line ending.
    if (content.find('\r') != std::string_view::npos) return {LineStep::Broken, {}, &kBareCr};
    return {LineStep::Complete, content};
}

// The next line of a head already validated, from <pos>.
std::string_view take_line(std::string_view head, std::size_t& pos) {
    std::size_t lf = head.find('\n', pos);
    if (lf == std::string_view::npos) lf = head.size();
    std::string_view line = head.substr(pos, lf - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = std::min(lf + 1, head.size());
    return line;
}

// ---- Start lines (RFC 9112 §3, §4) ------------------------------------------

// HTTP-version = "HTTP/" DIGIT "." DIGIT (§2.3). Returns the violation, or
// nullptr with <minor> set for HTTP/1.0 and HTTP/1.1.
const Violation* parse_version(std::string_view v, int& minor) {
    if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || !is_digit(v[5]) || v[6] != '.' || !is_digit(v[7])) {
        return &kBadVersion;
    }
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) return &kUnsupportedVersion;
    minor = v[7] - '0';
    return nullptr;
}

struct RequestLine {
    std::string_view method, target, path, query;
    int minor = 1;
};

// Splits <target> into path and query after the form checks of §3.2.
const Violation* parse_target(RequestLine& rl) {
    std::string_view t = rl.target;
    const bool connect = rl.method == "CONNECT";
    if (connect) {
        // authority-form (§3.2.3): uri-host ":" port, nothing else.
        std::size_t colon = t.rfind(':');
        if (colon == 0 || colon == std::string_view::npos || t.find_first_of("/?@") != std::string_view::npos) {
            return &kConnectNotAuthority;
        }
        std::string_view port = t.substr(colon + 1);
        if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), is_digit)) {
            return &kConnectNotAuthority;
        }
        rl.path = t;
        return nullptr;
    }
    if (t == "*") {
        // asterisk-form (§3.2.4) exists only for a server-wide OPTIONS.
        if (rl.method != "OPTIONS") return &kAsteriskNotOptions;
        rl.path = t;
        return nullptr;
    }
    std::string_view rest;  // path and query
    if (t.front() == '/') {
        rest = t;  // origin-form (§3.2.1)
    } else {
        // absolute-form (§3.2.2): scheme "://" authority path-abempty ["?" query].
        std::size_t i = 0;
        if (!is_alpha(t[0])) return &kBadTarget;
        while (i < t.size() && (is_alpha(t[i]) || is_digit(t[i]) || t[i] == '+' || t[i] == '-' || t[i] == '.')) ++i;
        if (t.substr(i, 3) != "://") return &kBadTarget;
        std::string_view after = t.substr(i + 3);
        std::size_t end = std::min(after.find_first_of("/?"), after.size());
        std::string_view authority = after.substr(0, end);
        // RFC 9110 §4.2.4: userinfo in an http(s) URI is to be treated as an error.
        if (authority.empty() || authority.find('@') != std::string_view::npos) return &kBadTarget;
        rest = after.substr(end);
    }
    std::size_t q = rest.find('?');
    rl.path = rest.substr(0, q);
    if (q != std::string_view::npos) rl.query = rest.substr(q + 1);
    if (rl.path.empty()) rl.path = "/";
    return nullptr;
}

// request-line = method SP request-target SP HTTP-version (§3).
const Violation* parse_request_line(std::string_view line, RequestLine& rl) {
    std::size_t i = 0;
    while (i < line.size() && is_tchar(static_cast<unsigned char>(line[i]))) ++i;
    if (i == 0) return &kBadMethod;
    if (i == line.size()) return &kBadRequestLine;
    if (line[i] != ' ') return &kBadMethod;
    rl.method = line.substr(0, i);
    const std::size_t target_start = ++i;
    while (i < line.size() && line[i] != ' ') {
        // Visible ASCII only (RFC 3986 §2); '#' starts a fragment, never sent (§3.2).
        const unsigned char c = static_cast<unsigned char>(line[i]);
        if (c <= 0x20 || c >= 0x7f || c == '#') return &kBadTargetChar;
        ++i;
    }
    if (i == target_start || i == line.size()) return &kBadRequestLine;
    rl.target = line.substr(target_start, i - target_start);
    std::string_view version = line.substr(i + 1);
    if (version.find(' ') != std::string_view::npos) return &kBadRequestLine;
    if (const Violation* v = parse_version(version, rl.minor)) return v;
    return parse_target(rl);
}

struct StatusLine {
    int minor = 1;
    int status = 0;
    std::string_view reason;
};

// status-line = HTTP-version SP status-code SP [ reason-phrase ] (§4); a
// missing SP before an empty reason is tolerated.
const Violation* parse_status_line(std::string_view line, StatusLine& sl) {
    if (line.size() < 12 || line[8] != ' ') return &kBadStatusLine;
    if (const Violation* v = parse_version(line.substr(0, 8), sl.minor)) {
        return v == &kBadVersion ? &kBadStatusLine : v;
    }
    std::string_view code = line.substr(9, 3);
    if (!std::all_of(code.begin(), code.end(), is_digit)) return &kBadStatusLine;
    if (line.size() > 12 && line[12] != ' ') return &kBadStatusLine;
    sl.status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
    if (sl.status < 100 || sl.status > 599) return &kBadStatusCode;
    sl.reason = line.size() > 12 ? line.substr(13) : std::string_view{};
    for (char c : sl.reason) {
        if (!is_visible_or_obs(c) && !is_ows(c)) return &kBadReasonPhrase;
    }
    return nullptr;
}

// ---- Header fields (RFC 9112 §5, RFC 9110 §5) -----------------------------

// field-line = field-name ":" OWS field-value OWS.
const Violation* parse_field_line(std::string_view line, Header& h) {
    if (is_ows(line.front())) return &kObsFold;  // §5.2
    std::size_t i = 0;
    while (i < line.size() && is_tchar(static_cast<unsigned char>(line[i]))) ++i;
    if (i == line.size()) return &kMissingColon;
    if (line[i] != ':') {
        if (!is_ows(line[i])) return &kBadFieldName;
        std::size_t j = i;
        while (j < line.size() && is_ows(line[j])) ++j;
        // §5.1: no whitespace between the name and the colon.
        return j < line.size() && line[j] == ':' ? &kSpaceBeforeColon : &kBadFieldName;
    }
    if (i == 0) return &kEmptyFieldName;
    std::string_view value = trim_ows(line.substr(i + 1));
    for (char c : value) {
        if (c == '\0') return &kNulInValue;
        if (!is_visible_or_obs(c) && !is_ows(c)) return &kCtlInValue;
    }
    h = {line.substr(0, i), value};
    return nullptr;
}

// Content-Length = 1*DIGIT (RFC 9110 §8.6); a list of identical values, as
// left by a merge of repeated fields, stands for that value.
const Violation* parse_content_length(std::string_view value, std::uint64_t& out) {
    bool seen = false;
    for (;;) {
        const std::size_t comma = value.find(',');
        std::string_view item = trim_ows(value.substr(0, comma));
        if (item.empty()) return &kBadContentLength;
        std::uint64_t n = 0;
        for (char c : item) {
            if (!is_digit(c)) return &kBadContentLength;
            const auto d = static_cast<std::uint64_t>(c - '0');
            if (n > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return &kBadContentLength;
            n = n * 10 + d;
        }
        if (seen && n != out) return &kConflictingContentLength;
        out = n;
        seen = true;
        if (comma == std::string_view::npos) return nullptr;
        value.remove_prefix(comma + 1);
    }
}

// Host = uri-host [ ":" port ] (RFC 9110 §7.2): reg-name, IP-literal or
// IPv4address characters, possibly empty.
bool valid_host(std::string_view value) {
    for (char c : value) {
        if (is_alpha(c) || is_digit(c)) continue;
        if (std::string_view("-._~%!$&'()*+,;=:[]").find(c) == std::string_view::npos) return false;
    }
    return true;
}

// Applies the rules that relate the fields of one head (RFC 9112 §3.2, §6)
// to the field line <h>, the next one of the head <p> describes.
const Violation* track_field(const Header& h, Role role, detail::Progress& p) {
    if (iequals(h.name, "content-length")) {
        std::uint64_t n = 0;
        if (const Violation* v = parse_content_length(h.value, n)) return v;
        if (p.content_length && *p.content_length != n) return &kConflictingContentLength;
        if (p.transfer_encoding) return &kLengthAndEncoding;
        p.content_length = n;
    } else if (iequals(h.name, "transfer-encoding")) {
        // §6.1: an HTTP/1.0 request cannot carry a transfer coding reliably.
        if (role == Role::Request && p.version_minor == 0) return &kEncodingInHttp10;
        if (p.content_length) return &kLengthAndEncoding;
        p.transfer_encoding = true;
        std::string_view rest = h.value;
        for (;;) {
            const std::size_t comma = rest.find(',');
            std::string_view coding = trim_ows(rest.substr(0, comma));
            if (!coding.empty()) {  // RFC 9110 §5.6.1: empty list elements are ignored
                // §6.1: chunked is applied at most once, and last.
                if (role == Role::Request && p.chunked_last) return &kChunkedTwice;
                p.chunked_last = iequals(coding, "chunked");
            }
            if (comma == std::string_view::npos) break;
            rest.remove_prefix(comma + 1);
        }
    } else if (role == Role::Request && iequals(h.name, "host")) {
        if (++p.hosts > 1) return &kMultipleHosts;
        if (!valid_host(h.value)) return &kBadHost;
    }
    return nullptr;
}

const Violation* check_field_line(std::string_view line, const Limits& limits, Role role, detail::Progress& p) {
    if (++p.fields > limits.max_headers) return &kTooManyFields;
    Header h;
    if (const Violation* v = parse_field_line(line, h)) return v;
    return track_field(h, role, p);
}

// Fills <out>'s headers and framing from the field lines of <head> from <pos>.
void fill_fields(std::string_view head, std::size_t pos, const detail::Progress& p, HeaderBlock& out) {
    out.headers.clear();
    out.headers.reserve(p.fields);
    for (std::string_view line = take_line(head, pos); !line.empty(); line = take_line(head, pos)) {
        Header h;
        parse_field_line(line, h);
        out.headers.push_back(h);
    }
}

}  // namespace

Result RequestParser::parse(std::string_view buffered, RequestHead& out) {
    detail::Progress& p = progress_;
    while (p.verdict.status == Status::NeedMore) {
        const Violation& too_long = p.start_line_seen ? kFieldLineTooLong : kRequestLineTooLong;
        const LineStep step = next_line(buffered, limits_, too_long, p.line_start, scanned_);
        if (step.kind == LineStep::Incomplete) return p.verdict;
        const Violation* v = step.violation;
        if (v == nullptr && !p.start_line_seen) {
            // §2.2: empty lines before the request line are ignored.
            if (step.content.empty()) continue;
            RequestLine rl;
            v = parse_request_line(step.content, rl);
            p.version_minor = rl.minor;
            p.start_line_seen = true;
        } else if (v == nullptr && !step.content.empty()) {
            v = check_field_line(step.content, limits_, Role::Request, p);
        } else if (v == nullptr) {
            // End of the head. §3.2: HTTP/1.1 requires Host; §6.3: without a
            // final chunked the length of a request body is unknowable.
            if (p.version_minor == 1 && p.hosts == 0) {
                v = &kMissingHost;
            } else if (p.transfer_encoding && !p.chunked_last) {
                v = &kChunkedNotLast;
            } else {
                p.verdict = {Status::Done, p.line_start, 0, {}};
            }
        }
        if (v != nullptr) p.verdict = error(*v, Role::Request);
    }
    if (p.verdict.status == Status::Done) {
        const std::string_view head = buffered.substr(0, p.verdict.consumed);
        std::size_t pos = 0;
        std::string_view line = take_line(head, pos);
        while (line.empty()) line = take_line(head, pos);
        RequestLine rl;
        parse_request_line(line, rl);
        out.method = rl.method;
        out.target = rl.target;
        out.path = rl.path;
        out.query = rl.query;
        out.version_minor = rl.minor;
        out.content_length = p.content_length;
        out.chunked = p.transfer_encoding;
        fill_fields(head, pos, p, out);
    }
    return p.verdict;
}

Result ResponseParser::parse(std::string_view buffered, ResponseHead& out) {
    detail::Progress& p = progress_;
    while (p.verdict.status == Status::NeedMore) {
        const Violation& too_long = p.start_line_seen ? kFieldLineTooLong : kStatusLineTooLong;
        const LineStep step = next_line(buffered, limits_, too_long, p.line_start, scanned_);
        if (step.kind == LineStep::Incomplete) return p.verdict;
        const Violation* v = step.violation;
        if (v == nullptr && !p.start_line_seen) {
            StatusLine sl;
            v = parse_status_line(step.content, sl);
            p.version_minor = sl.minor;
            p.start_line_seen = true;
        } else if (v == nullptr && !step.content.empty()) {
            v = check_field_line(step.content, limits_, Role::Response, p);
        } else if (v == nullptr) {
            p.verdict = {Status::Done, p.line_start, 0, {}};
        }
        if (v != nullptr) p.verdict = error(*v, Role::Response);
    }
    if (p.verdict.status == Status::Done) {
        const std::string_view head = buffered.substr(0, p.verdict.consumed);
        std::size_t pos = 0;
        StatusLine sl;
        parse_status_line(take_line(head, pos), sl);
        out.version_minor = sl.minor;
        out.status = sl.status;
        out.reason = sl.reason;
        // §6.3: a response whose codings do not end in chunked is read until
        // the server closes; Content-Length never comes with Transfer-Encoding here.
        out.chunked = p.transfer_encoding && p.chunked_last;
        out.content_length = p.content_length;
        fill_fields(head, pos, p, out);
    }
    return p.verdict;
}

}  // namespace http1
