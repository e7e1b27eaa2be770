// The `hash` setting of a pool: where the session key comes from.
#include "balance/chash.h"

namespace chash {

bool parse_key_spec(std::string_view text, KeySpec& out) {
    if (text == "ip") {
        out = {KeySource::Ip, {}};
        return true;
    }
    if (text == "path") {
        out = {KeySource::Path, {}};
        return true;
    }
    struct Prefix {
        std::string_view text;
        KeySource source;
    };
    for (const Prefix& p : {Prefix{"header:", KeySource::Header}, Prefix{"cookie:", KeySource::Cookie},
                            Prefix{"query:", KeySource::Query}, Prefix{"claim:", KeySource::Claim}}) {
        if (text.substr(0, p.text.size()) == p.text && text.size() > p.text.size()) {
            out = {p.source, std::string(text.substr(p.text.size()))};
            return true;
        }
    }
    return false;
}

std::string to_string(const KeySpec& spec) {
    switch (spec.source) {
        case KeySource::Ip: return "ip";
        case KeySource::Path: return "path";
        case KeySource::Header: return "header:" + spec.name;
        case KeySource::Cookie: return "cookie:" + spec.name;
        case KeySource::Query: return "query:" + spec.name;
        case KeySource::Claim: return "claim:" + spec.name;
    }
    return "?";
}

}  // namespace chash
