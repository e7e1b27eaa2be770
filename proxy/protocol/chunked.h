// The chunked transfer coding (RFC 9112 §7.1), scanned, not buffered: like
// the WebSocket frame scanner, the decoder tells the relay which bytes at the
// front of its input are framing (size lines, the CRLF after each chunk's
// data, trailer lines: the relay drops them) and how many bytes of chunk data
// follow (the relay moves them on untouched). Pure and resumable: a byte
// stream may be cut anywhere and fed in pieces with the same outcome.
//
// Strict, because a proxy and a back end that disagree on where a body ends
// is request smuggling (RFC 9112 §11.2): chunk-size is 1*HEXDIG without
// overflow; chunk-ext is only *( BWS ";" BWS token [ BWS "=" BWS
// ( token / quoted-string ) ] ); every line ends in CRLF (no bare LF or CR);
// trailer fields are field lines (a token name, a colon right after it, a
// value of VCHAR, obs-text, SP and HTAB) without obs-fold, within limits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace chunked {

struct Limits {
    std::size_t max_line_bytes = 4096;      // one chunk-size line (size and extensions), CRLF not counted
    std::size_t max_trailer_bytes = 16384;  // the whole trailer section incl. CRLFs
    std::size_t max_trailers = 100;         // trailer field lines
};

struct Step {
    enum class Kind {
        NeedMore,  // framing is due and <front> was empty: call again with more bytes
        Framing,   // drop the next `bytes` (> 0) bytes; when `chunk_start`, a chunk of
                   // `chunk_size` (> 0) data bytes begins right after them
        Data,      // move the next `bytes` bytes of chunk data on; `chunk_end` when they finish their chunk
        Done,      // the body ended: drop the next `bytes` bytes (the end of the trailer section)
        Error,     // malformed: `reason` names the rule (a request gets 400, a response 502)
    };
    Kind kind = Kind::NeedMore;
    std::size_t bytes = 0;
    bool chunk_start = false;
    bool chunk_end = false;
    std::uint64_t chunk_size = 0;
    std::string_view reason;  // static text
};

class Decoder {
public:
    explicit Decoder(Limits limits = {}) : limits_(limits) {}

    // <front> is a copy of the first bytes of the unread stream (any length:
    // framing is consumed byte by byte); <available> is how many unread bytes
    // there are in all (>= front.size()). In the middle of chunk data only
    // <available> matters and <front> may be empty. The caller removes the
    // bytes each step names before the next call.
    Step step(std::span<const std::uint8_t> front, std::size_t available);

    bool done() const { return state_ == State::Done; }
    // True between chunks' data: the output may be cut here cleanly.
    bool in_data() const { return state_ == State::Data; }
    std::uint64_t data_bytes() const { return data_total_; }  // chunk data bytes so far

private:
    enum class State {
        SizeFirst,     // a chunk-size line starts: one hex digit required
        Size,          // more hex digits, BWS, ';' or CR
        SizeWs,        // BWS after the size: only more BWS or ';'
        ExtNameStart,  // after ';' and BWS: a token starts
        ExtName,       // token bytes, then BWS, '=', ';' or CR
        ExtNameWs,     // BWS after a name: '=', ';' or more BWS
        ExtValueStart, // after '=' and BWS: a token or a quoted-string
        ExtValueToken, // token bytes, then BWS, ';' or CR
        ExtValueEnd,   // after a closing quote: BWS, ';' or CR
        ExtQuoted,     // inside a quoted-string
        ExtQuotedPair, // after a backslash in a quoted-string
        ExtValueWs,    // BWS after a value: ';' or more BWS
        SizeLf,        // CR of the size line seen
        Data,          // chunk data due
        DataCr,        // CRLF after the data
        DataLf,
        TrailerStart,  // a trailer line or the final CRLF starts
        TrailerName,
        TrailerValue,
        TrailerLf,     // CR of a trailer line seen
        FinalLf,       // CR of the final empty line seen
        Done,
        Failed,
    };

    Step fail(std::string_view reason);

    Limits limits_;
    State state_ = State::SizeFirst;
    std::uint64_t size_ = 0;       // the chunk being declared, then its data still due
    std::size_t line_bytes_ = 0;   // of the current size line
    std::size_t trailer_bytes_ = 0;
    std::size_t trailers_ = 0;
    std::uint64_t data_total_ = 0;
    std::string_view error_;       // repeated once Failed
};

// The chunk-size line for <size> data bytes: hex digits and CRLF ("1a\r\n").
// Writes into <out> (at least 18 bytes) and returns its length.
std::size_t encode_size_line(std::uint64_t size, char* out);

}  // namespace chunked
