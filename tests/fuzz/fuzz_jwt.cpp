// libFuzzer target for JWT verification and the JSON parser beneath it.
// The first byte picks a mode, so one target reaches every layer:
//   0: the rest is a token, verified by an HS256 verifier;
//   1: the rest is "<header JSON>\n<payload JSON>", encoded and signed with
//      the verifier's secret, so the claim checks behind the signature run;
//   2: the rest is JSON (auth/json over nlohmann-json): parse, and
//      dump(parse(dump(v))) must equal dump(v);
//   3: the rest is a request field value: every token extraction helper.
// Any crash, sanitizer report or broken invariant (trap) is a finding.
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "auth/jwt.h"
#include "protocol/cookie.h"

namespace {

const std::string secret = "fuzzing secret, thirty-two bytes or more";

const jwt::Verifier& verifier() {
    static const jwt::Verifier v = [] {
        jwt::Options o;
        o.algorithm = jwt::Algorithm::HS256;
        o.key = secret;
        o.issuer = "issuer";
        o.audience = "wsgate";
        o.leeway_seconds = 5;
        return std::get<jwt::Verifier>(jwt::Verifier::create(o));
    }();
    return v;
}

std::string hmac(std::string_view data) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    std::size_t length = 0;
    if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
                  reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, sizeof mac,
                  &length) == nullptr)
        __builtin_trap();
    return std::string(reinterpret_cast<char*>(mac), length);
}

void check_result(const jwt::Result& r) {
    if (r.ok != r.error.empty()) __builtin_trap();
    if (r.ok) {
        // Claims of a verified token render without crashing.
        if (r.claims.payload() == nullptr || !r.claims.payload()->is_object()) __builtin_trap();
        for (const auto& member : r.claims.payload()->items()) {
            auto text = r.claims.claim(member.key());
            auto header = r.claims.header_value(member.key());
            if (header && !text) __builtin_trap();
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    const std::int64_t now = 1700000000;
    switch (data[0] % 4) {
    case 0:
        check_result(verifier().verify(rest, now));
        break;
    case 1: {
        auto newline = rest.find('\n');
        std::string_view header = rest.substr(0, newline);
        std::string_view payload = newline == std::string_view::npos ? "" : rest.substr(newline + 1);
        std::string signing_input = jwt::base64url_encode(header) + "." + jwt::base64url_encode(payload);
        check_result(verifier().verify(signing_input + "." + jwt::base64url_encode(hmac(signing_input)), now));
        break;
    }
    case 2: {
        auto parsed = json::parse(rest);
        if (auto* value = std::get_if<json::Value>(&parsed)) {
            std::string once = value->dump();
            auto again = json::parse(once, json::Limits{.max_bytes = once.size(), .max_depth = 16});
            auto* reparsed = std::get_if<json::Value>(&again);
            if (reparsed == nullptr || reparsed->dump() != once) __builtin_trap();
            (void)json::text_of(*value);
        }
        break;
    }
    default: {
        auto bearer = jwt::bearer_token(rest);
        if (bearer && bearer->empty()) __builtin_trap();
        if (auto value = cookie::find(rest, "session"); value && value->size() > rest.size()) __builtin_trap();
        (void)jwt::query_value(rest, "token");
        auto decoded = jwt::base64url_decode(rest);
        if (decoded && jwt::base64url_encode(*decoded) != rest) __builtin_trap();
        break;
    }
    }
    return 0;
}
