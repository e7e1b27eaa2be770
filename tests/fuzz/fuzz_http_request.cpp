// libFuzzer target for http1::RequestParser. The input is parsed whole and
// again split in two (a prefix, then the whole) at a position taken from the
// first byte, under default and under small limits; both ways must agree on
// status, consumed bytes, error and parsed head, and a Done head must respect
// the limits and point into the buffer.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/http1.h"

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

bool inside(std::string_view v, std::string_view buf) {
    return v.empty() || v == "/" || (v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size());
}

void check_done(const http1::Result& r, const http1::RequestHead& h, std::string_view buf, const http1::Limits& l) {
    check(r.consumed >= 4 && r.consumed <= buf.size() && r.consumed <= l.max_head_bytes);
    check(buf.substr(r.consumed - 4, 4) == "\r\n\r\n");
    check(h.headers.size() <= l.max_headers);
    check(!h.method.empty() && !h.target.empty() && !h.path.empty());
    check(h.version_minor == 0 || h.version_minor == 1);
    check(!(h.chunked && h.content_length.has_value()));
    check(inside(h.method, buf) && inside(h.target, buf) && inside(h.path, buf) && inside(h.query, buf));
    for (const http1::Header& x : h.headers) {
        check(!x.name.empty() && inside(x.name, buf) && inside(x.value, buf));
        check(x.value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos);
    }
}

bool same(const http1::Result& a, const http1::Result& b) {
    return a.status == b.status && a.consumed == b.consumed && a.http_status == b.http_status && a.reason == b.reason;
}

bool same_head(const http1::RequestHead& a, const http1::RequestHead& b) {
    if (a.method != b.method || a.target != b.target || a.path != b.path || a.query != b.query ||
        a.version_minor != b.version_minor || a.content_length != b.content_length || a.chunked != b.chunked ||
        a.headers.size() != b.headers.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.headers.size(); ++i) {
        if (a.headers[i].name != b.headers[i].name || a.headers[i].value != b.headers[i].value) return false;
    }
    return true;
}

void run(std::string_view input, std::size_t split, const http1::Limits& limits) {
    const std::string whole_buf(input);
    http1::RequestParser whole_parser(limits);
    http1::RequestHead whole;
    const http1::Result w = whole_parser.parse(whole_buf, whole);
    if (w.status == http1::Status::Done) check_done(w, whole, whole_buf, limits);
    if (w.status == http1::Status::Error) {
        check(!w.reason.empty());
        check(w.http_status == 400 || w.http_status == 414 || w.http_status == 431 || w.http_status == 505);
    }

    http1::RequestParser split_parser(limits);
    http1::RequestHead part;
    const std::string prefix(input.substr(0, split));
    const http1::Result first = split_parser.parse(prefix, part);
    if (first.status != http1::Status::NeedMore) check(same(first, w));
    const std::string again(input);
    const http1::Result second = split_parser.parse(again, part);
    check(same(second, w));
    if (w.status == http1::Status::Done) check(same_head(part, whole));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const std::size_t split = size == 0 ? 0 : data[0] % (size + 1);
    run(input, split, http1::Limits{});
    run(input, split, http1::Limits{128, 4, 48});
    return 0;
}
