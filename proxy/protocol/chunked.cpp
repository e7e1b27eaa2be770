// Chunked transfer coding scanner (RFC 9112 §7.1): one byte of framing at a
// time, so that a line cut anywhere resumes where it stopped and every
// verdict depends only on the bytes before the point where it was decided.
#include "protocol/chunked.h"

#include "protocol/http1.h"

#include <algorithm>
#include <array>
#include <limits>

namespace chunked {

namespace {

bool is_ws(std::uint8_t c) { return c == ' ' || c == '\t'; }

int hex_value(std::uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// qdtext (RFC 9110 §5.6.4): HTAB, SP, %x21, %x23-5B, %x5D-7E, obs-text.
bool is_qdtext(std::uint8_t c) {
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

// What a quoted-pair may escape, and what a field value may hold: HTAB, SP,
// VCHAR, obs-text.
bool is_field_byte(std::uint8_t c) { return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f); }

constexpr std::string_view kBadSize = "invalid chunk size";
constexpr std::string_view kSizeTooLarge = "chunk size too large";
constexpr std::string_view kBadExtension = "invalid chunk extension";
constexpr std::string_view kLineTooLong = "chunk size line too long";
constexpr std::string_view kBadSizeLineEnd = "chunk size line not ended by CRLF";
constexpr std::string_view kBadDataEnd = "chunk data not followed by CRLF";
constexpr std::string_view kTrailerFold = "obs-fold in trailer section";
constexpr std::string_view kBadTrailerName = "invalid trailer field name";
constexpr std::string_view kBadTrailerValue = "invalid character in trailer field";
constexpr std::string_view kBadTrailerEnd = "trailer line not ended by CRLF";
constexpr std::string_view kTrailersTooLarge = "trailer section too large";
constexpr std::string_view kTooManyTrailers = "too many trailer fields";

Step make_step(Step::Kind kind, std::size_t bytes, bool chunk_start = false, bool chunk_end = false,
               std::uint64_t chunk_size = 0) {
    Step step;
    step.kind = kind;
    step.bytes = bytes;
    step.chunk_start = chunk_start;
    step.chunk_end = chunk_end;
    step.chunk_size = chunk_size;
    return step;
}

}  // namespace

Step Decoder::fail(std::string_view reason) {
    state_ = State::Failed;
    error_ = reason;
    Step step = make_step(Step::Kind::Error, 0);
    step.reason = reason;
    return step;
}

Step Decoder::step(std::span<const std::uint8_t> front, std::size_t available) {
    switch (state_) {
        case State::Failed: return fail(error_);
        case State::Done: return make_step(Step::Kind::Done, 0);
        case State::Data: {
            if (available == 0) return Step{};
            const std::uint64_t n = std::min<std::uint64_t>(size_, available);
            size_ -= n;
            data_total_ += n;
            const bool end = size_ == 0;
            if (end) state_ = State::DataCr;
            return make_step(Step::Kind::Data, static_cast<std::size_t>(n), false, end);
        }
        default: break;
    }
    if (front.empty()) return Step{};

    for (std::size_t i = 0; i < front.size(); ++i) {
        const std::uint8_t c = front[i];
        const bool in_size_line = state_ <= State::ExtValueWs;
        if (in_size_line && c == '\n') return fail(kBadSizeLineEnd);  // a bare LF (RFC 9112 §2.2)
        if (in_size_line && c != '\r' && ++line_bytes_ > limits_.max_line_bytes) return fail(kLineTooLong);
        const bool in_trailers = state_ >= State::TrailerStart && state_ <= State::FinalLf;
        if (in_trailers && ++trailer_bytes_ > limits_.max_trailer_bytes) return fail(kTrailersTooLarge);

        switch (state_) {
            case State::SizeFirst:
                if (hex_value(c) < 0) return fail(kBadSize);
                size_ = static_cast<std::uint64_t>(hex_value(c));
                state_ = State::Size;
                break;
            case State::Size:
                if (hex_value(c) >= 0) {
                    if (size_ > (std::numeric_limits<std::uint64_t>::max() >> 4)) return fail(kSizeTooLarge);
                    size_ = (size_ << 4) | static_cast<std::uint64_t>(hex_value(c));
                } else if (is_ws(c)) {
                    state_ = State::SizeWs;
                } else if (c == ';') {
                    state_ = State::ExtNameStart;
                } else if (c == '\r') {
                    state_ = State::SizeLf;
                } else {
                    return fail(kBadSize);
                }
                break;
            case State::SizeWs:
                // BWS after the size belongs to a chunk-ext: a ';' must follow.
                if (c == ';') {
                    state_ = State::ExtNameStart;
                } else if (!is_ws(c)) {
                    return fail(c == '\r' ? kBadExtension : kBadSize);
                }
                break;
            case State::ExtNameStart:
                if (http1::is_tchar(c)) {
                    state_ = State::ExtName;
                } else if (!is_ws(c)) {
                    return fail(kBadExtension);
                }
                break;
            case State::ExtName:
                if (http1::is_tchar(c)) break;
                if (is_ws(c)) {
                    state_ = State::ExtNameWs;
                } else if (c == '=') {
                    state_ = State::ExtValueStart;
                } else if (c == ';') {
                    state_ = State::ExtNameStart;
                } else if (c == '\r') {
                    state_ = State::SizeLf;
                } else {
                    return fail(kBadExtension);
                }
                break;
            case State::ExtNameWs:
                if (c == '=') {
                    state_ = State::ExtValueStart;
                } else if (c == ';') {
                    state_ = State::ExtNameStart;
                } else if (!is_ws(c)) {
                    return fail(kBadExtension);
                }
                break;
            case State::ExtValueStart:
                if (c == '"') {
                    state_ = State::ExtQuoted;
                } else if (http1::is_tchar(c)) {
                    state_ = State::ExtValueToken;
                } else if (!is_ws(c)) {
                    return fail(kBadExtension);
                }
                break;
            case State::ExtValueToken:
            case State::ExtValueEnd:
                if (state_ == State::ExtValueToken && http1::is_tchar(c)) break;
                if (is_ws(c)) {
                    state_ = State::ExtValueWs;
                } else if (c == ';') {
                    state_ = State::ExtNameStart;
                } else if (c == '\r') {
                    state_ = State::SizeLf;
                } else {
                    return fail(kBadExtension);
                }
                break;
            case State::ExtQuoted:
                if (c == '"') {
                    state_ = State::ExtValueEnd;
                } else if (c == '\\') {
                    state_ = State::ExtQuotedPair;
                } else if (!is_qdtext(c)) {
                    return fail(kBadExtension);
                }
                break;
            case State::ExtQuotedPair:
                if (!is_field_byte(c)) return fail(kBadExtension);
                state_ = State::ExtQuoted;
                break;
            case State::ExtValueWs:
                if (c == ';') {
                    state_ = State::ExtNameStart;
                } else if (!is_ws(c)) {
                    return fail(kBadExtension);
                }
                break;
            case State::SizeLf:
                if (c != '\n') return fail(kBadSizeLineEnd);
                line_bytes_ = 0;
                if (size_ == 0) {
                    state_ = State::TrailerStart;
                    break;
                }
                state_ = State::Data;
                return make_step(Step::Kind::Framing, i + 1, true, false, size_);
            case State::DataCr:
                if (c != '\r') return fail(kBadDataEnd);
                state_ = State::DataLf;
                break;
            case State::DataLf:
                if (c != '\n') return fail(kBadDataEnd);
                state_ = State::SizeFirst;
                break;
            case State::TrailerStart:
                if (c == '\r') {
                    state_ = State::FinalLf;
                } else if (is_ws(c)) {
                    return fail(kTrailerFold);
                } else if (http1::is_tchar(c)) {
                    if (++trailers_ > limits_.max_trailers) return fail(kTooManyTrailers);
                    state_ = State::TrailerName;
                } else {
                    return fail(kBadTrailerName);
                }
                break;
            case State::TrailerName:
                if (c == ':') {
                    state_ = State::TrailerValue;
                } else if (!http1::is_tchar(c)) {
                    return fail(kBadTrailerName);
                }
                break;
            case State::TrailerValue:
                if (c == '\r') {
                    state_ = State::TrailerLf;
                } else if (!is_field_byte(c)) {
                    return fail(kBadTrailerValue);
                }
                break;
            case State::TrailerLf:
                if (c != '\n') return fail(kBadTrailerEnd);
                state_ = State::TrailerStart;
                break;
            case State::FinalLf:
                if (c != '\n') return fail(kBadTrailerEnd);
                state_ = State::Done;
                return make_step(Step::Kind::Done, i + 1);
            case State::Data:
            case State::Done:
            case State::Failed: break;  // handled before the loop
        }
    }
    return make_step(Step::Kind::Framing, front.size());
}

std::size_t encode_size_line(std::uint64_t size, char* out) {
    static constexpr char kHex[] = "0123456789abcdef";
    char digits[16];
    std::size_t n = 0;
    do {
        digits[n++] = kHex[size & 0xf];
        size >>= 4;
    } while (size != 0);
    std::size_t len = 0;
    while (n > 0) out[len++] = digits[--n];
    out[len++] = '\r';
    out[len++] = '\n';
    return len;
}

}  // namespace chunked
