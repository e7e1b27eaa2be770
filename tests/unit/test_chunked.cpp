#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "protocol/chunked.h"

namespace {

// What a relay driving the decoder ends up with.
struct Outcome {
    std::string data;                  // chunk data moved on
    std::vector<std::uint64_t> sizes;  // chunk sizes announced
    std::size_t chunk_ends = 0;
    std::string verdict;               // "done", "more" or the error reason
    std::size_t consumed = 0;          // bytes of the input taken by the body (0 on an error)

    bool operator==(const Outcome&) const = default;
};

// Feeds <input> as a relay would: the bytes before each cut in <cuts> become
// available in turn, the decoder sees at most <peek> of them at a time.
Outcome relay(std::string_view input, std::vector<std::size_t> cuts, std::size_t peek,
              chunked::Limits limits = {}) {
    chunked::Decoder decoder(limits);
    Outcome out;
    cuts.push_back(input.size());
    std::size_t pos = 0;
    for (std::size_t cut : cuts) {
        const std::string_view visible = input.substr(0, cut);
        while (pos < visible.size()) {
            const std::size_t available = visible.size() - pos;
            const std::string_view front = visible.substr(pos, std::min(peek, available));
            chunked::Step step = decoder.step(
                std::span(reinterpret_cast<const std::uint8_t*>(front.data()), front.size()), available);
            REQUIRE(step.bytes <= available);
            switch (step.kind) {
                case chunked::Step::Kind::NeedMore: FAIL("NeedMore with bytes available"); return out;
                case chunked::Step::Kind::Framing:
                    REQUIRE(step.bytes > 0);
                    if (step.chunk_start) out.sizes.push_back(step.chunk_size);
                    pos += step.bytes;
                    break;
                case chunked::Step::Kind::Data:
                    REQUIRE(step.bytes > 0);
                    out.data.append(visible.substr(pos, step.bytes));
                    if (step.chunk_end) ++out.chunk_ends;
                    pos += step.bytes;
                    break;
                case chunked::Step::Kind::Done:
                    pos += step.bytes;
                    out.verdict = "done";
                    out.consumed = pos;
                    CHECK(decoder.done());
                    CHECK(decoder.data_bytes() == out.data.size());
                    return out;
                case chunked::Step::Kind::Error:
                    // Where the framing before the error was dropped depends on the cuts.
                    out.verdict = std::string(step.reason);
                    return out;
            }
        }
    }
    out.verdict = "more";
    out.consumed = pos;
    return out;
}

// The outcome of <input> fed whole, and checks that every split in two
// pieces and every peek window gives the same one.
Outcome decode(std::string_view input, chunked::Limits limits = {}) {
    const Outcome whole = relay(input, {}, 64, limits);
    for (std::size_t cut = 0; cut <= input.size(); ++cut) {
        INFO("cut at " << cut);
        CHECK(relay(input, {cut}, 64, limits) == whole);
    }
    for (std::size_t peek : {1, 2, 3, 7}) {
        INFO("peek " << peek);
        CHECK(relay(input, {}, peek, limits) == whole);
    }
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < input.size(); ++i) every.push_back(i);
    CHECK(relay(input, every, 64, limits) == whole);
    return whole;
}

}  // namespace

namespace doctest {
template <>
struct StringMaker<Outcome> {
    static String convert(const Outcome& o) {
        std::string sizes;
        for (std::uint64_t s : o.sizes) sizes += std::to_string(s) + ",";
        return String(("{" + o.verdict + " consumed=" + std::to_string(o.consumed) + " data=" + o.data +
                       " sizes=" + sizes + " ends=" + std::to_string(o.chunk_ends) + "}")
                          .c_str());
    }
};
}  // namespace doctest

TEST_CASE("chunked: chunks, hex sizes and the last chunk") {
    Outcome o = decode("5\r\nhello\r\n00A\r\n, chunked!\r\n0\r\n\r\n");
    CHECK(o.verdict == "done");
    CHECK(o.data == "hello, chunked!");
    CHECK(o.sizes == std::vector<std::uint64_t>{5, 10});
    CHECK(o.chunk_ends == 2);
    CHECK(o.consumed == 32);
}

TEST_CASE("chunked: bytes after the body are not consumed (a pipelined request follows)") {
    Outcome o = decode("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n");
    CHECK(o.verdict == "done");
    CHECK(o.consumed == 13);
}

TEST_CASE("chunked: an empty body is the last chunk alone") {
    Outcome o = decode("0\r\n\r\n");
    CHECK(o.verdict == "done");
    CHECK(o.data.empty());
    CHECK(o.sizes.empty());
}

TEST_CASE("chunked: extensions with BWS, tokens and quoted strings are accepted") {
    for (std::string_view line : {"4;a\r\n", "4;a=b\r\n", "4 ;a=b\r\n", "4\t; a = b ;c\r\n", "4;a=\"q\\\"x;y\"\r\n",
                                  "4;a=\"\"\r\n", "4;a=\"x\" ;b\r\n", "4;name=!#$%&'*+-.^_`|~\r\n"}) {
        INFO(line);
        Outcome o = decode(std::string(line) + "wxyz\r\n0;last\r\n\r\n");
        CHECK(o.verdict == "done");
        CHECK(o.data == "wxyz");
    }
}

TEST_CASE("chunked: trailers are validated and consumed") {
    Outcome o = decode("2\r\nhi\r\n0\r\nExpires: never\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\nNEXT");
    CHECK(o.verdict == "done");
    CHECK(o.data == "hi");
    CHECK(o.consumed == 49);
}

TEST_CASE("chunked: malformed chunk sizes are rejected") {
    CHECK(decode("\r\n").verdict == "invalid chunk size");
    CHECK(decode("x\r\n").verdict == "invalid chunk size");
    CHECK(decode("-1\r\n").verdict == "invalid chunk size");
    CHECK(decode("+1\r\n").verdict == "invalid chunk size");
    CHECK(decode("0x5\r\n").verdict == "invalid chunk size");
    CHECK(decode("5g\r\n").verdict == "invalid chunk size");
    CHECK(decode(" 5\r\n").verdict == "invalid chunk size");
    CHECK(decode("5 5\r\n").verdict == "invalid chunk size");
    CHECK(decode("5,5\r\n").verdict == "invalid chunk size");
    CHECK(decode("5\n").verdict == "chunk size line not ended by CRLF");
    CHECK(decode("5\rx").verdict == "chunk size line not ended by CRLF");
    CHECK(decode("5\r\r\n").verdict == "chunk size line not ended by CRLF");
}

TEST_CASE("chunked: a size that overflows 64 bits is rejected, the largest one is not") {
    CHECK(decode("10000000000000000\r\n").verdict == "chunk size too large");
    Outcome o = decode("ffffffffffffffff\r\nabc");
    CHECK(o.verdict == "more");
    CHECK(o.sizes == std::vector<std::uint64_t>{0xffffffffffffffffULL});
    CHECK(o.data == "abc");
    // Leading zeros do not count towards the overflow.
    CHECK(decode("000000000000000000001\r\nx\r\n0\r\n\r\n").verdict == "done");
}

TEST_CASE("chunked: malformed extensions are rejected") {
    for (std::string_view line : {"5 \r\n", "5;\r\n", "5;a=\r\n", "5;a \r\n", "5;a=b \r\n", "5;a=\"x\r\n",
                                  "5;a b\r\n", "5;a=b c\r\n", "5;@\r\n", "5;a=@\r\n", "5;a=\"x\"y\r\n",
                                  "5;a=\"\x01\"\r\n", "5;a=\"\\\x01\"\r\n", "5;=b\r\n"}) {
        INFO(line);
        CHECK(decode(line).verdict == "invalid chunk extension");
    }
}

TEST_CASE("chunked: the CRLF after chunk data is required") {
    CHECK(decode("5\r\nhelloX\r\n0\r\n\r\n").verdict == "chunk data not followed by CRLF");
    CHECK(decode("5\r\nhello\n0\r\n\r\n").verdict == "chunk data not followed by CRLF");
    CHECK(decode("5\r\nhello\r0\r\n\r\n").verdict == "chunk data not followed by CRLF");
    // A body longer than announced: the extra byte is not a CR.
    CHECK(decode("3\r\nhello\r\n").verdict == "chunk data not followed by CRLF");
}

TEST_CASE("chunked: malformed trailers are rejected") {
    CHECK(decode("0\r\nA: b\r\n c\r\n\r\n").verdict == "obs-fold in trailer section");
    CHECK(decode("0\r\n\tc\r\n\r\n").verdict == "obs-fold in trailer section");
    CHECK(decode("0\r\nA : b\r\n\r\n").verdict == "invalid trailer field name");
    CHECK(decode("0\r\n:b\r\n\r\n").verdict == "invalid trailer field name");
    CHECK(decode("0\r\nA\r\n\r\n").verdict == "invalid trailer field name");
    CHECK(decode("0\r\nA: b\x01\r\n\r\n").verdict == "invalid character in trailer field");
    CHECK(decode("0\r\nA: b\n\r\n").verdict == "invalid character in trailer field");
    CHECK(decode("0\r\nA: b\rx").verdict == "trailer line not ended by CRLF");
    CHECK(decode("0\r\n\rx").verdict == "trailer line not ended by CRLF");
    CHECK(decode("0\r\n\n").verdict == "invalid trailer field name");
}

TEST_CASE("chunked: limits on the size line and the trailer section") {
    chunked::Limits small{8, 24, 2};
    CHECK(decode("5;abcdef\r\nhello\r\n0\r\n\r\n", small).verdict == "done");
    CHECK(decode("5;abcdefg\r\n", small).verdict == "chunk size line too long");
    CHECK(decode("000000005\r\n", small).verdict == "chunk size line too long");
    CHECK(decode("0\r\nA: 1\r\nB: 2\r\n\r\n", small).verdict == "done");
    CHECK(decode("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", small).verdict == "too many trailer fields");
    CHECK(decode("0\r\nA: 123456789012345678\r\n\r\n", small).verdict == "trailer section too large");
}

TEST_CASE("chunked: an incomplete body needs more bytes") {
    Outcome o = decode("5\r\nhel");
    CHECK(o.verdict == "more");
    CHECK(o.data == "hel");
    CHECK(decode("5\r\nhello\r\n0\r\n").verdict == "more");
    CHECK(decode("5;a=\"x").verdict == "more");
}

TEST_CASE("chunked: verdicts are final") {
    chunked::Decoder d;
    const std::uint8_t bad[] = {'z'};
    CHECK(d.step(bad, 1).kind == chunked::Step::Kind::Error);
    const std::uint8_t good[] = {'0', '\r', '\n', '\r', '\n'};
    chunked::Step again = d.step(good, 5);
    CHECK(again.kind == chunked::Step::Kind::Error);
    CHECK(again.reason == "invalid chunk size");

    chunked::Decoder e;
    CHECK(e.step(good, 5).kind == chunked::Step::Kind::Done);
    chunked::Step after = e.step(good, 5);
    CHECK(after.kind == chunked::Step::Kind::Done);
    CHECK(after.bytes == 0);
}

TEST_CASE("chunked: framing with no bytes shown asks for more") {
    chunked::Decoder d;
    CHECK(d.step({}, 10).kind == chunked::Step::Kind::NeedMore);
    const std::uint8_t line[] = {'2', '\r', '\n'};
    chunked::Step s = d.step(line, 3);
    CHECK(s.kind == chunked::Step::Kind::Framing);
    CHECK(s.chunk_start);
    CHECK(d.in_data());
    // In data only <available> matters.
    chunked::Step data = d.step({}, 10);
    CHECK(data.kind == chunked::Step::Kind::Data);
    CHECK(data.bytes == 2);
    CHECK(data.chunk_end);
    CHECK(d.step({}, 0).kind == chunked::Step::Kind::NeedMore);
}

TEST_CASE("chunked: size lines for re-framing") {
    char out[18];
    CHECK(std::string_view(out, chunked::encode_size_line(0, out)) == "0\r\n");
    CHECK(std::string_view(out, chunked::encode_size_line(26, out)) == "1a\r\n");
    CHECK(std::string_view(out, chunked::encode_size_line(4096, out)) == "1000\r\n");
    CHECK(std::string_view(out, chunked::encode_size_line(0xffffffffffffffffULL, out)) == "ffffffffffffffff\r\n");
}

TEST_CASE("chunked: re-encoding decoded chunks round-trips through the decoder") {
    std::string body;
    std::string expected;
    for (std::size_t size = 1; size <= 300; size += 37) {
        char line[18];
        body.append(line, chunked::encode_size_line(size, line));
        std::string data(size, static_cast<char>('a' + size % 26));
        body += data + "\r\n";
        expected += data;
    }
    body += "0\r\n\r\n";
    Outcome o = relay(body, {}, 5);
    CHECK(o.verdict == "done");
    CHECK(o.data == expected);
    CHECK(o.consumed == body.size());
}
