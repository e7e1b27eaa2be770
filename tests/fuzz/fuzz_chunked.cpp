// libFuzzer target for chunked::Decoder. The input is relayed as a stream
// twice: whole with a wide peek window, and cut at a position taken from the
// first byte with a narrow window. Both must agree on the verdict, the chunk
// data and the chunk sizes; every step must stay within the bytes available;
// the data moved must add up to the sizes announced; and re-encoding the
// decoded chunks must decode to the same data.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/chunked.h"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

struct Outcome {
    std::string data;
    std::vector<std::uint64_t> sizes;
    int verdict = 0;  // 0 more, 1 done, 2 error
    std::string_view reason;
    std::size_t consumed = 0;
};

Outcome relay(std::string_view input, std::size_t cut, std::size_t peek, const chunked::Limits& limits) {
    chunked::Decoder decoder(limits);
    Outcome out;
    std::size_t pos = 0;
    std::uint64_t due = 0;  // data bytes of the current chunk still expected
    for (std::size_t visible_size : {cut, input.size()}) {
        const std::string_view visible = input.substr(0, visible_size);
        while (pos < visible.size()) {
            const std::size_t available = visible.size() - pos;
            const std::string_view front = visible.substr(pos, std::min(peek, available));
            const chunked::Step step = decoder.step(
                std::span(reinterpret_cast<const std::uint8_t*>(front.data()), front.size()), available);
            check(step.bytes <= available);
            switch (step.kind) {
                case chunked::Step::Kind::NeedMore: check(false); break;
                case chunked::Step::Kind::Framing:
                    check(step.bytes > 0 && step.bytes <= front.size() && due == 0);
                    if (step.chunk_start) {
                        check(step.chunk_size > 0);
                        out.sizes.push_back(step.chunk_size);
                        due = step.chunk_size;
                    }
                    pos += step.bytes;
                    break;
                case chunked::Step::Kind::Data:
                    check(step.bytes > 0 && step.bytes <= due);
                    due -= step.bytes;
                    check(step.chunk_end == (due == 0));
                    out.data.append(visible.substr(pos, step.bytes));
                    pos += step.bytes;
                    break;
                case chunked::Step::Kind::Done:
                    check(due == 0 && decoder.done() && decoder.data_bytes() == out.data.size());
                    out.verdict = 1;
                    out.consumed = pos + step.bytes;
                    return out;
                case chunked::Step::Kind::Error:
                    check(!step.reason.empty());
                    out.verdict = 2;
                    out.reason = step.reason;
                    return out;
            }
        }
    }
    return out;
}

void run(std::string_view input, std::size_t cut, const chunked::Limits& limits) {
    const Outcome whole = relay(input, input.size(), 4096, limits);
    const Outcome split = relay(input, cut, 1 + cut % 5, limits);
    check(whole.verdict == split.verdict && whole.reason == split.reason && whole.data == split.data &&
          whole.sizes == split.sizes && whole.consumed == split.consumed);
    if (whole.verdict != 1) return;
    std::string again;
    std::size_t at = 0;
    for (std::uint64_t size : whole.sizes) {
        char line[18];
        again.append(line, chunked::encode_size_line(size, line));
        again.append(whole.data.substr(at, size));
        again.append("\r\n");
        at += size;
    }
    again.append("0\r\n\r\n");
    const Outcome round = relay(again, again.size() / 2, 3, chunked::Limits{});
    check(round.verdict == 1 && round.data == whole.data && round.sizes == whole.sizes &&
          round.consumed == again.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const std::size_t cut = size == 0 ? 0 : data[0] % (size + 1);
    run(input, cut, chunked::Limits{});
    run(input, cut, chunked::Limits{16, 32, 2});
    return 0;
}
