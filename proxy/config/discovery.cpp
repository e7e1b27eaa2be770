#include "config/discovery.h"

#include <algorithm>
#include <charconv>
#include <set>

namespace discovery {

namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// A target as compared: lower case, without the root dot.
std::string canonical_name(std::string_view name) {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    std::string out(name);
    std::transform(out.begin(), out.end(), out.begin(), lower);
    return out;
}

}  // namespace

std::string_view name_problem(std::string_view name) {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    if (name.empty()) return "expected a host name";
    if (name.size() > 253) return "a host name has at most 253 characters";
    bool letter = false;
    std::size_t label = 0;
    for (char c : name) {
        if (c == '.') {
            if (label == 0) return "a host name has no empty labels";
            label = 0;
            continue;
        }
        const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alpha && !(c >= '0' && c <= '9') && c != '-' && c != '_') {
            return "a host name has only letters, digits, \"-\", \"_\" and dots";
        }
        letter = letter || alpha;
        if (++label > 63) return "a host name label has at most 63 characters";
    }
    if (label == 0) return "a host name has no empty labels";
    if (!letter) return "not a numeric address nor a host name";
    return {};
}

std::string_view named_address_problem(std::string_view text, std::string& name, std::uint16_t& port) {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return "missing \":port\"";
    const std::string_view host = text.substr(0, colon);
    const std::string_view digits = text.substr(colon + 1);
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty() || digits.size() > 5 || ec != std::errc{} || end != digits.data() + digits.size() ||
        value == 0 || value > 65535) {
        return "the port must be a number between 1 and 65535";
    }
    if (const std::string_view problem = name_problem(host); !problem.empty()) return problem;
    name = std::string(host);
    port = static_cast<std::uint16_t>(value);
    return {};
}

std::vector<Member> normalise(std::span<const Record> records) {
    std::vector<Member> out;
    out.reserve(records.size());
    for (const Record& record : records) {
        if (record.port == 0) continue;
        const bool v6 = record.ip.find(':') != std::string::npos;
        const std::string text =
            (v6 ? "[" + record.ip + "]" : record.ip) + ":" + std::to_string(record.port);
        Member member;
        if (!config::parse_socket_address(text, member.address)) continue;
        member.weight = std::clamp<std::uint32_t>(record.weight, 1, kMaxWeight);
        out.push_back(std::move(member));
    }
    // By id, then the largest weight first, so that unique() keeps it.
    std::sort(out.begin(), out.end(), [](const Member& a, const Member& b) {
        if (a.id() != b.id()) return a.id() < b.id();
        return a.weight > b.weight;
    });
    out.erase(std::unique(out.begin(), out.end(), [](const Member& a, const Member& b) { return a.id() == b.id(); }),
              out.end());
    return out;
}

std::vector<SrvRecord> usable_srv(std::span<const SrvRecord> records) {
    std::vector<SrvRecord> out;
    std::uint16_t best = 0xffff;
    for (const SrvRecord& r : records) {
        const std::string target = canonical_name(r.target);
        if (r.port == 0 || target.empty()) continue;  // "." = the service is not offered there
        if (r.priority < best) {
            best = r.priority;
            out.clear();
        }
        if (r.priority == best) out.push_back(SrvRecord{target, r.port, r.priority, r.weight});
    }
    std::sort(out.begin(), out.end(), [](const SrvRecord& a, const SrvRecord& b) {
        if (a.target != b.target) return a.target < b.target;
        if (a.port != b.port) return a.port < b.port;
        return a.weight > b.weight;
    });
    out.erase(std::unique(out.begin(), out.end(),
                          [](const SrvRecord& a, const SrvRecord& b) { return a.target == b.target && a.port == b.port; }),
              out.end());
    return out;
}

std::string_view to_string(Outcome outcome) {
    switch (outcome) {
        case Outcome::Ok: return "ok";
        case Outcome::Empty: return "empty";
        case Outcome::NotFound: return "nxdomain";
        case Outcome::ServFail: return "servfail";
        case Outcome::Timeout: return "timeout";
        case Outcome::Refused: return "refused";
        case Outcome::Error: return "error";
    }
    return "error";
}

Outcome combine(Outcome a, Outcome b) {
    const auto failed = [](Outcome o) { return o != Outcome::Ok && o != Outcome::Empty; };
    if (failed(a)) return a;
    if (failed(b)) return b;
    return (a == Outcome::Ok || b == Outcome::Ok) ? Outcome::Ok : Outcome::Empty;
}

bool apply(NameState& state, Outcome outcome, std::vector<Member> answer, std::int64_t now_ms, std::int64_t hold_ms) {
    if (outcome == Outcome::Ok && !answer.empty()) {
        state.last_good_ms = now_ms;
        const bool changed = answer.size() != state.members.size() ||
                             !std::equal(answer.begin(), answer.end(), state.members.begin(),
                                         [](const Member& a, const Member& b) {
                                             return a.id() == b.id() && a.weight == b.weight;
                                         });
        state.members = std::move(answer);
        return changed;
    }
    // A resolver that blinked must not empty a pool: the last good members
    // stay for <hold_ms>.
    if (state.members.empty() || now_ms - state.last_good_ms < hold_ms) return false;
    state.members.clear();
    return true;
}

std::int64_t next_delay_ms(std::int64_t ttl_seconds, std::int64_t interval_ms) {
    const std::int64_t longest = std::max(interval_ms, kMinIntervalMs);
    if (ttl_seconds < 0 || ttl_seconds >= longest / 1000 + 1) return longest;
    return std::clamp(ttl_seconds * 1000, kMinIntervalMs, longest);
}

Diff diff(std::span<const std::string> before, std::span<const std::string> after) {
    const std::set<std::string> a(before.begin(), before.end());
    const std::set<std::string> b(after.begin(), after.end());
    Diff out;
    std::set_difference(b.begin(), b.end(), a.begin(), a.end(), std::back_inserter(out.added));
    std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out.removed));
    std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out.kept));
    return out;
}

std::string describe(std::string_view pool, const Diff& change) {
    std::string out = "pool " + std::string(pool) + ":";
    for (const std::string& id : change.added) out += " +" + id;
    for (const std::string& id : change.removed) out += " -" + id;
    return out;
}

std::shared_ptr<const config::Config> expand(const config::Config& file, const Resolved& resolved) {
    auto config = std::make_shared<config::Config>(file);
    for (config::Pool& pool : config->pools) {
        if (pool.sources.empty()) continue;
        std::set<std::string> ids;
        for (const config::Backend& backend : pool.backends) ids.insert(backend.id);
        for (const config::BackendSource& source : pool.sources) {
            const auto found = resolved.find(source_key(source));
            if (found == resolved.end()) continue;
            for (const Member& member : found->second) {
                if (!ids.insert(member.id()).second) continue;
                config::Backend backend;
                backend.address = member.address;
                backend.id = member.id();
                backend.weight = source.srv ? member.weight : source.weight;
                backend.tls = source.tls;
                backend.source = source.text;
                pool.backends.push_back(std::move(backend));
            }
        }
        std::sort(pool.backends.begin(), pool.backends.end(),
                  [](const config::Backend& a, const config::Backend& b) { return a.id < b.id; });
    }
    // Routes point at pools by index; Route::pool_index stays valid because
    // the pools keep their order.
    return config;
}

std::vector<std::string> backend_ids(const config::Config& config, std::size_t pool_index) {
    std::vector<std::string> out;
    for (const config::Backend& backend : config.pools[pool_index].backends) out.push_back(backend.id);
    return out;
}

}  // namespace discovery
