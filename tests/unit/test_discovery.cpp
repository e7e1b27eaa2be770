// Dynamic pools, the pure part (proxy/config/discovery.cpp), and the
// [resolver] and DNS [[pool.backend]] keys of the configuration. The c-ares
// side (proxy/runtime/resolver.cpp) is driven by tests/integration/43_discovery.py.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>

#include "balance/chash.h"
#include "config/config.h"
#include "config/discovery.h"
#include "runtime/generation.h"

namespace {

using discovery::Member;
using discovery::Outcome;
using discovery::Record;

std::vector<std::string> ids_of(const std::vector<Member>& members) {
    std::vector<std::string> out;
    for (const Member& m : members) out.push_back(m.id());
    return out;
}

std::vector<Member> members_of(std::vector<Record> records) { return discovery::normalise(records); }

std::shared_ptr<const config::Config> load_ok(std::string_view text) {
    auto result = config::load_string(text, "d.toml");
    if (auto* errors = std::get_if<std::vector<config::Error>>(&result)) {
        for (const auto& e : *errors) MESSAGE(e.to_string());
        FAIL("unexpected errors");
    }
    return std::get<std::shared_ptr<const config::Config>>(result);
}

std::vector<std::string> load_errors(std::string_view text) {
    auto result = config::load_string(text, "d.toml");
    REQUIRE(std::holds_alternative<std::vector<config::Error>>(result));
    std::vector<std::string> out;
    for (const auto& e : std::get<std::vector<config::Error>>(result)) out.push_back(e.to_string());
    return out;
}

// 4 lines; what is appended starts at line 5.
constexpr std::string_view kHead = R"([[listener]]
listen = "127.0.0.1:8080"
[[pool]]
name = "chat"
)";

std::string with(std::string_view more) { return std::string(kHead) + std::string(more); }

}  // namespace

TEST_CASE("discovery: name_problem and named_address_problem") {
    CHECK(discovery::name_problem("chat.default.svc.cluster.local") == "");
    CHECK(discovery::name_problem("_ws._tcp.chat.service.consul.") == "");
    CHECK(discovery::name_problem("chat") == "");
    CHECK(discovery::name_problem("") == "expected a host name");
    CHECK(discovery::name_problem("a..b") == "a host name has no empty labels");
    CHECK(discovery::name_problem(".a") == "a host name has no empty labels");
    CHECK(discovery::name_problem("a b") == "a host name has only letters, digits, \"-\", \"_\" and dots");
    CHECK(discovery::name_problem("1.2.3") == "not a numeric address nor a host name");
    CHECK(discovery::name_problem(std::string(64, 'a')) == "a host name label has at most 63 characters");
    CHECK(discovery::name_problem(std::string(63, 'a')) == "");
    std::string long_name;
    for (int i = 0; i < 64; ++i) long_name += "abc.";
    CHECK(discovery::name_problem(long_name) == "a host name has at most 253 characters");

    std::string name;
    std::uint16_t port = 0;
    CHECK(discovery::named_address_problem("chat.local:9000", name, port) == "");
    CHECK(name == "chat.local");
    CHECK(port == 9000);
    CHECK(discovery::named_address_problem("chat.local", name, port) == "missing \":port\"");
    for (const char* bad : {"chat:0", "chat:65536", "chat:", "chat:9x", "chat:+1", "chat:123456"}) {
        CHECK(discovery::named_address_problem(bad, name, port) == "the port must be a number between 1 and 65535");
    }
}

TEST_CASE("discovery: normalise ignores record order and duplicates, mixes A and AAAA") {
    const std::vector<Record> records = {{"10.0.0.7", 9000, 1}, {"fd00::5", 9000, 1}, {"10.0.0.5", 9000, 1},
                                         {"10.0.0.7", 9000, 1}, {"FD00:0::5", 9000, 1}, {"10.0.0.10", 9000, 1}};
    const std::vector<std::string> expected = {"10.0.0.10:9000", "10.0.0.5:9000", "10.0.0.7:9000", "[fd00::5]:9000"};
    CHECK(ids_of(members_of(records)) == expected);
    // Every permutation gives the same members.
    std::vector<Record> shuffled = records;
    std::mt19937 rng(7);
    for (int i = 0; i < 50; ++i) {
        std::shuffle(shuffled.begin(), shuffled.end(), rng);
        CHECK(ids_of(members_of(shuffled)) == expected);
    }
    // Invalid addresses and port 0 are dropped; weight 0 counts as 1; weights are capped.
    const auto odd = members_of({{"not-an-ip", 1, 1}, {"10.0.0.1", 0, 1}, {"10.0.0.2", 80, 0}, {"10.0.0.3", 80, 70000}});
    REQUIRE(odd.size() == 2);
    CHECK(odd[0].id() == "10.0.0.2:80");
    CHECK(odd[0].weight == 1);
    CHECK(odd[1].weight == discovery::kMaxWeight);
    // A duplicate keeps the largest weight, whatever the order.
    CHECK(members_of({{"10.0.0.2", 80, 3}, {"10.0.0.2", 80, 5}})[0].weight == 5);
    CHECK(members_of({{"10.0.0.2", 80, 5}, {"10.0.0.2", 80, 3}})[0].weight == 5);
    // The same address on two ports is two members.
    CHECK(members_of({{"10.0.0.2", 80, 1}, {"10.0.0.2", 81, 1}}).size() == 2);
}

TEST_CASE("discovery: usable_srv keeps the lowest priority, merges duplicates") {
    const std::vector<discovery::SrvRecord> records = {
        {"B.example.", 9001, 10, 5}, {"a.example", 9000, 10, 0}, {"c.example", 9002, 20, 9},
        {"b.example", 9001, 10, 7},  {".", 9003, 0, 1},          {"d.example", 0, 1, 1}};
    const auto usable = discovery::usable_srv(records);
    REQUIRE(usable.size() == 2);
    CHECK(usable[0].target == "a.example");
    CHECK(usable[0].weight == 0);  // normalise() counts it as 1
    CHECK(usable[1].target == "b.example");
    CHECK(usable[1].port == 9001);
    CHECK(usable[1].weight == 7);
    std::vector<discovery::SrvRecord> reversed(records.rbegin(), records.rend());
    const auto again = discovery::usable_srv(reversed);
    REQUIRE(again.size() == 2);
    CHECK(again[1].weight == 7);
    CHECK(discovery::usable_srv(std::vector<discovery::SrvRecord>{}).empty());
    CHECK(discovery::usable_srv(std::vector<discovery::SrvRecord>{{".", 1, 0, 0}}).empty());
}

TEST_CASE("discovery: combine and to_string") {
    CHECK(discovery::combine(Outcome::Empty, Outcome::Ok) == Outcome::Ok);
    CHECK(discovery::combine(Outcome::Ok, Outcome::Empty) == Outcome::Ok);
    CHECK(discovery::combine(Outcome::Empty, Outcome::Empty) == Outcome::Empty);
    CHECK(discovery::combine(Outcome::Ok, Outcome::Timeout) == Outcome::Timeout);
    CHECK(discovery::combine(Outcome::ServFail, Outcome::Ok) == Outcome::ServFail);
    CHECK(discovery::combine(Outcome::NotFound, Outcome::Timeout) == Outcome::NotFound);
    CHECK(discovery::to_string(Outcome::NotFound) == "nxdomain");
    CHECK(discovery::to_string(Outcome::Refused) == "refused");
}

TEST_CASE("discovery: apply keeps the last good members for hold") {
    discovery::NameState state;
    const auto two = members_of({{"10.0.0.1", 80, 1}, {"10.0.0.2", 80, 1}});
    // Never resolved: a failure changes nothing.
    CHECK_FALSE(discovery::apply(state, Outcome::NotFound, {}, 0, 1000));
    CHECK(state.members.empty());
    CHECK(discovery::apply(state, Outcome::Ok, two, 100, 1000));
    CHECK(state.members.size() == 2);
    // The same answer again: no change.
    CHECK_FALSE(discovery::apply(state, Outcome::Ok, two, 200, 1000));
    // Failures and a valid empty answer keep the members until hold after the last good answer.
    CHECK_FALSE(discovery::apply(state, Outcome::Timeout, {}, 500, 1000));
    CHECK_FALSE(discovery::apply(state, Outcome::Empty, {}, 1100, 1000));
    CHECK_FALSE(discovery::apply(state, Outcome::Ok, {}, 1150, 1000));  // NOERROR, no records
    CHECK(state.members.size() == 2);
    CHECK(discovery::apply(state, Outcome::ServFail, {}, 1200, 1000));
    CHECK(state.members.empty());
    CHECK_FALSE(discovery::apply(state, Outcome::ServFail, {}, 5000, 1000));
    // A weight change is a change.
    CHECK(discovery::apply(state, Outcome::Ok, two, 6000, 1000));
    CHECK(discovery::apply(state, Outcome::Ok, members_of({{"10.0.0.1", 80, 2}, {"10.0.0.2", 80, 1}}), 6100, 1000));
    // hold = 0: the first failure empties.
    CHECK(discovery::apply(state, Outcome::Timeout, {}, 6200, 0));
}

TEST_CASE("discovery: next_delay_ms honours a shorter TTL down to 100 ms") {
    CHECK(discovery::next_delay_ms(-1, 5000) == 5000);
    CHECK(discovery::next_delay_ms(30, 5000) == 5000);
    CHECK(discovery::next_delay_ms(2, 5000) == 2000);
    CHECK(discovery::next_delay_ms(0, 5000) == 100);
    CHECK(discovery::next_delay_ms(0, 200) == 100);
    CHECK(discovery::next_delay_ms(1, 200) == 200);
    CHECK(discovery::next_delay_ms(std::int64_t{1} << 62, 5000) == 5000);
}

TEST_CASE("discovery: diff and describe") {
    const std::vector<std::string> before = {"10.0.0.5:9000", "10.0.0.6:9000", "10.0.0.6:9000"};
    const std::vector<std::string> after = {"10.0.0.7:9000", "10.0.0.6:9000"};
    const discovery::Diff d = discovery::diff(before, after);
    CHECK(d.added == std::vector<std::string>{"10.0.0.7:9000"});
    CHECK(d.removed == std::vector<std::string>{"10.0.0.5:9000"});
    CHECK(d.kept == std::vector<std::string>{"10.0.0.6:9000"});
    CHECK(d.changed());
    CHECK(discovery::describe("chat", d) == "pool chat: +10.0.0.7:9000 -10.0.0.5:9000");
    CHECK_FALSE(discovery::diff(after, std::vector<std::string>{"10.0.0.6:9000", "10.0.0.7:9000"}).changed());
    CHECK(discovery::diff({}, {}).kept.empty());
}

TEST_CASE("discovery: expand adds members sorted by id, file back ends first in precedence") {
    const auto file = load_ok(with(R"(algorithm = "maglev"
[[pool.backend]]
address = "10.0.0.9:9000"
weight = 4
[[pool.backend]]
address = "chat.local:9000"
weight = 2
tls = true
[[pool.backend]]
srv = "_ws._tcp.chat.local"
[[pool]]
name = "fixed"
[[pool.backend]]
address = "127.0.0.1:1"
[[route]]
pool = "chat"
)"));
    REQUIRE(file->pools[0].sources.size() == 2);
    CHECK(file->pools[0].backends.size() == 1);
    discovery::Resolved resolved;
    resolved["chat.local:9000"] = members_of({{"10.0.0.9", 9000, 1}, {"10.0.0.2", 9000, 1}});
    resolved["_ws._tcp.chat.local"] = members_of({{"10.0.0.3", 7000, 5}, {"10.0.0.2", 9000, 1}});
    const auto expanded = discovery::expand(*file, resolved);
    const auto& pool = expanded->pools[0];
    REQUIRE(pool.backends.size() == 3);
    CHECK(pool.backends[0].id == "10.0.0.2:9000");
    CHECK(pool.backends[0].weight == 2);  // the address source's weight, first source wins
    CHECK(pool.backends[0].tls);
    CHECK(pool.backends[0].source == "chat.local:9000");
    CHECK(pool.backends[1].id == "10.0.0.3:7000");
    CHECK(pool.backends[1].weight == 5);  // the SRV record's
    CHECK(pool.backends[1].source == "_ws._tcp.chat.local");
    CHECK(pool.backends[2].id == "10.0.0.9:9000");
    CHECK(pool.backends[2].weight == 4);  // written in the file: kept as written
    CHECK(pool.backends[2].source.empty());
    CHECK(expanded->pools[1].backends.size() == 1);
    CHECK(discovery::backend_ids(*expanded, 0) ==
          std::vector<std::string>{"10.0.0.2:9000", "10.0.0.3:7000", "10.0.0.9:9000"});
    // Nothing resolved: only the file's back end.
    CHECK(discovery::expand(*file, {})->pools[0].backends.size() == 1);
}

TEST_CASE("discovery: a member added moves only its keys, whatever the answer's order") {
    // The members normalise() gives feed the pickers: the same ids in any
    // order, with duplicates, give the same table; an added member takes
    // about 1/11 of the keys. The ring moves no key between old members;
    // Maglev, whose table is refilled, moves a few (its paper's "minimal
    // disruption" is approximate).
    std::vector<Record> records;
    for (int i = 1; i <= 10; ++i) records.push_back({"10.0.0." + std::to_string(i), 9000, 1});
    const auto ten = members_of(records);
    std::vector<Record> reversed(records.rbegin(), records.rend());
    reversed.push_back(records[3]);
    records.push_back({"10.0.0.11", 9000, 1});
    const auto eleven = members_of(records);
    for (const chash::Algorithm algorithm : {chash::Algorithm::Ring, chash::Algorithm::Maglev}) {
        auto picker_of = [&](const std::vector<Member>& members) {
            std::vector<chash::Member> m;
            for (const Member& member : members) m.push_back({member.id(), member.weight});
            return chash::make_picker(algorithm, m, 65537);
        };
        const auto picker = picker_of(ten);
        const auto same = picker_of(members_of(reversed));
        const auto grown = picker_of(eleven);
        chash::AllEligible all;
        int to_new = 0;
        int between_old = 0;
        int disagree = 0;
        constexpr int kKeys = 20000;
        for (int k = 0; k < kKeys; ++k) {
            const std::uint64_t h = chash::hash_bytes("key" + std::to_string(k));
            disagree += picker->pick(h, 0, all) != same->pick(h, 0, all);
            const std::string& old_owner = ten[picker->pick(h, 0, all)].id();
            const std::string& new_owner = eleven[grown->pick(h, 0, all)].id();
            if (old_owner == new_owner) continue;
            (new_owner == "10.0.0.11:9000" ? to_new : between_old)++;
        }
        MESSAGE("moved to the new member: " << to_new << ", between old members: " << between_old);
        CHECK(disagree == 0);
        CHECK(to_new > kKeys / 11 * 0.8);
        CHECK(to_new < kKeys / 11 * 1.25);
        if (algorithm == chash::Algorithm::Ring) {
            CHECK(between_old == 0);
        } else {
            CHECK(between_old < kKeys / 50);
        }
    }
}

TEST_CASE("config: [resolver] and DNS back ends") {
    const auto config = load_ok(with(R"([[pool.backend]]
address = "chat.default.svc.cluster.local:9000"
weight = 3
[[pool.backend]]
srv = "_ws._tcp.chat.service.consul"
[[pool.backend]]
address = "127.0.0.1:9001"
[resolver]
servers = ["10.0.0.2:53", "[::1]:5353"]
interval = "100ms"
timeout = "1s"
hold = "0s"
)"));
    const auto& pool = config->pools[0];
    REQUIRE(pool.sources.size() == 2);
    CHECK_FALSE(pool.sources[0].srv);
    CHECK(pool.sources[0].name == "chat.default.svc.cluster.local");
    CHECK(pool.sources[0].port == 9000);
    CHECK(pool.sources[0].weight == 3);
    CHECK(pool.sources[0].text == "chat.default.svc.cluster.local:9000");
    CHECK(pool.sources[1].srv);
    CHECK(pool.sources[1].name == "_ws._tcp.chat.service.consul");
    CHECK(pool.backends.size() == 1);
    REQUIRE(config->resolver.servers.size() == 2);
    CHECK(config->resolver.servers[1].text == "[::1]:5353");
    CHECK(config->resolver.interval.count() == 100);
    CHECK(config->resolver.timeout.count() == 1000);
    CHECK(config->resolver.hold.count() == 0);

    // Defaults; a pool of names only is valid (it starts empty).
    const auto defaults = load_ok(with("[[pool.backend]]\naddress = \"chat:1\"\n"));
    CHECK(defaults->resolver.servers.empty());
    CHECK(defaults->resolver.interval.count() == 5000);
    CHECK(defaults->resolver.timeout.count() == 2000);
    CHECK(defaults->resolver.hold.count() == 60000);
    CHECK(defaults->pools[0].backends.empty());
}

TEST_CASE("config: errors of [resolver] and DNS back ends") {
    CHECK(load_errors(with("[[pool.backend]]\naddress = \"chat:9000\"\nid = \"x\"\n")) ==
          std::vector<std::string>{"d.toml:7:6: pool[0].backend[0].id: cannot be combined with a host name or srv "
                                   "(each discovered member's id is its \"IP:port\")"});
    CHECK(load_errors(with("[[pool.backend]]\nsrv = \"_ws._tcp.chat\"\nid = \"x\"\n")) ==
          std::vector<std::string>{"d.toml:7:6: pool[0].backend[0].id: cannot be combined with a host name or srv "
                                   "(each discovered member's id is its \"IP:port\")"});
    CHECK(load_errors(with("[[pool.backend]]\nsrv = \"_ws..chat\"\n")) ==
          std::vector<std::string>{"d.toml:6:7: pool[0].backend[0].srv: a host name has no empty labels, got \"_ws..chat\""});
    CHECK(load_errors(with("[[pool.backend]]\nsrv = \"_ws._tcp.chat\"\naddress = \"chat:1\"\n")) ==
          std::vector<std::string>{"d.toml:7:11: pool[0].backend[0].address: cannot be combined with srv (the SRV "
                                   "records name the members)"});
    CHECK(load_errors(with("[[pool.backend]]\nsrv = \"_ws._tcp.chat\"\nweight = 2\n")) ==
          std::vector<std::string>{"d.toml:7:10: pool[0].backend[0].weight: cannot be combined with srv (the SRV "
                                   "records' weights are used)"});
    CHECK(load_errors(with("[[pool.backend]]\nsrv = 5\n")) ==
          std::vector<std::string>{"d.toml:6:7: pool[0].backend[0].srv: expected a string, got an integer"});
    CHECK(load_errors(with("[[pool.backend]]\naddress = \"chat:0\"\n")) ==
          std::vector<std::string>{"d.toml:6:11: pool[0].backend[0].address: the port must be a number between 1 "
                                   "and 65535, got \"chat:0\""});
    CHECK(load_errors(with("[[pool.backend]]\naddress = \"chat\"\n")) ==
          std::vector<std::string>{"d.toml:6:11: pool[0].backend[0].address: missing \":port\", got \"chat\""});
    CHECK(load_errors(with("[[pool.backend]]\naddress = \"chat:1\"\n[[pool.backend]]\naddress = \"chat:1\"\n")) ==
          std::vector<std::string>{"d.toml:8:11: pool[0].backend[1].address: duplicate \"chat:1\" in pool"});
    CHECK(load_errors(with("[[pool.backend]]\naddress = \"chat:1\"\n[resolver]\ninterval = \"99ms\"\ntimeout = \"0s\"\n"
                           "hold = \"x\"\nservers = [\"dns:53\", 1, \"10.0.0.1:0\"]\nport = 1\n")) ==
          std::vector<std::string>{
              "d.toml:8:12: resolver.interval: must be at least \"100ms\", got \"99ms\"",
              "d.toml:9:11: resolver.timeout: must be greater than zero",
              "d.toml:10:8: resolver.hold: expected a duration: a non-negative integer and a unit ms, s, m or h, as in "
              "\"30s\", got \"x\"",
              "d.toml:11:22: resolver.servers[1]: expected a string, got an integer",
              "d.toml:12:1: resolver.port: unknown key (expected servers, interval, timeout or hold)",
          });
    CHECK(load_errors(with("[[pool.backend]]\naddress = \"chat:1\"\n[resolver]\nservers = [\"dns:53\", \"10.0.0.1:0\"]\n")) ==
          std::vector<std::string>{
              "d.toml:8:12: resolver.servers[0]: not a numeric IPv4 address (host names are not resolved), got \"dns:53\"",
              "d.toml:8:22: resolver.servers[1]: the port must be a number between 1 and 65535, got \"10.0.0.1:0\"",
          });
    CHECK(load_errors(with("[[pool.backend]]\naddress = \"chat:1\"\nresolver = 1\n")) ==
          std::vector<std::string>{"d.toml:7:1: pool[0].backend[0].resolver: unknown key (expected address, weight, id, tls or srv)"});
}

TEST_CASE("discovery: a membership change keeps the state of the members that stay") {
    // What Server::membership_changed() publishes: the file expanded with the
    // new members, built as a Generation beside the previous one.
    const auto file = load_ok(with("[[pool.backend]]\naddress = \"chat.local:9000\"\n"));
    discovery::Resolved two{{"chat.local:9000", members_of({{"10.0.0.1", 9000, 1}, {"10.0.0.2", 9000, 1}})}};
    discovery::Resolved three{
        {"chat.local:9000", members_of({{"10.0.0.3", 9000, 1}, {"10.0.0.2", 9000, 1}, {"10.0.0.1", 9000, 1}})}};
    const runtime::Generation empty(discovery::expand(*file, {}), 1, nullptr);
    CHECK(empty.pools()[0].states.empty());
    CHECK(runtime::no_backend_status(empty.pools()[0]) == 503);
    const runtime::Generation first(discovery::expand(*file, two), 2, &empty);
    first.find_state("10.0.0.1:9000")->active = 7;
    CHECK(runtime::no_backend_status(first.pools()[0]) == 502);
    const runtime::Generation second(discovery::expand(*file, three), 3, &first);
    CHECK(second.find_state("10.0.0.1:9000") == first.find_state("10.0.0.1:9000"));
    CHECK(second.find_state("10.0.0.1:9000")->active == 7);
    CHECK(second.find_state("10.0.0.2:9000") == first.find_state("10.0.0.2:9000"));
    CHECK(second.find_state("10.0.0.3:9000") != nullptr);
    CHECK(first.find_state("10.0.0.3:9000") == nullptr);
    // A removed member is absent from the next generation: workers drain its sessions.
    const runtime::Generation third(discovery::expand(*file, two), 4, &second);
    CHECK(third.find_state("10.0.0.3:9000") == nullptr);
}
