#include <doctest/doctest.h>

#include "observability/access_log.h"

namespace {

obs::AccessRecord sample() {
    obs::AccessRecord r;
    r.time_ms = 1764100800123;  // 2025-11-25T20:00:00.123Z
    r.request_id = "abc";
    r.client = "127.0.0.1:5000";
    r.method = "GET";
    r.host = "example.com";
    r.path = "/chat";
    r.status = 101;
    r.pool = "main";
    r.backend = "127.0.0.1:9001";
    r.connect_ms = 1;
    r.duration_ms = 2500;
    r.bytes_in = 300;
    r.bytes_out = 400;
    r.messages_in = 3;
    r.messages_out = 4;
    r.close_code = 1000;
    r.close_by = "client";
    r.reason = "client closed";
    return r;
}

}  // namespace

TEST_CASE("RFC 3339 times with milliseconds in UTC") {
    CHECK(obs::format_time(0) == "1970-01-01T00:00:00.000Z");
    CHECK(obs::format_time(1764100800123) == "2025-11-25T20:00:00.123Z");
    CHECK(obs::format_time(951782400999) == "2000-02-29T00:00:00.999Z");
}

TEST_CASE("JSON access line has every field in order") {
    CHECK(obs::format_json(sample()) ==
          R"({"time":"2025-11-25T20:00:00.123Z","request_id":"abc","client":"127.0.0.1:5000","proto":"http/1.1","method":"GET",)"
          R"("host":"example.com","path":"/chat","status":101,"pool":"main","backend":"127.0.0.1:9001",)"
          R"("key_fallback":false,"connect_ms":1,"duration_ms":2500,"bytes_in":300,"bytes_out":400,)"
          R"("messages_in":3,"messages_out":4,"close_code":1000,"close_by":"client","reason":"client closed",)"
          R"("subject":""})");
}

TEST_CASE("JSON strings are escaped") {
    auto r = sample();
    r.path = "/a\"b\\c\x01\n";
    auto line = obs::format_json(r);
    CHECK(line.find(R"("path":"/a\"b\\c\u0001\n")") != std::string::npos);
    CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("text access line has the same fields, quoting values that need it") {
    auto r = sample();
    r.key_fallback = true;
    r.backend = "";
    CHECK(obs::format_text(r) ==
          "time=2025-11-25T20:00:00.123Z request_id=abc client=127.0.0.1:5000 proto=http/1.1 method=GET host=example.com "
          "path=/chat status=101 pool=main backend=\"\" key_fallback=true connect_ms=1 duration_ms=2500 "
          "bytes_in=300 bytes_out=400 messages_in=3 messages_out=4 close_code=1000 close_by=client "
          "reason=\"client closed\" subject=\"\"");
}
