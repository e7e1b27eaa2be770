// Balance, disruption and speed of the two consistent-hashing tables.
// Standalone (`make bench-hash`), not a unit test: prints one Markdown table.
//
// For 3, 10 and 100 back ends of weight 1 and 1,000,000 keys:
//   max/mean    keys on the busiest back end / keys per back end on average
//   moved -1    share of keys whose back end changes when one back end is
//               removed (ideal: 1/n, exactly the removed back end's keys),
//               averaged over 5 choices of the removed back end
//   moved +1    the same when one back end is added (ideal: 1/(n+1))
//   lookup      ns per pick(hash, 0, AllEligible) over precomputed key hashes
//   build       time to build the table
// Maglev runs with the default table size 65537, and with 131071 and 655373 at
// 100 back ends to show what a larger table buys.
//
// Then the CPU time of a DNS membership change of a 100-member Maglev pool:
// what the main thread does when a name's answer changes (the file's Config
// expanded with the members, config/discovery.h, and a new Generation built
// from it, runtime/generation.h).
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "balance/chash.h"
#include "config/discovery.h"
#include "runtime/generation.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kKeys = 1'000'000;
constexpr std::size_t kTrials = 5;  // back ends removed (added) one at a time, averaged

std::vector<chash::Member> backends(std::size_t n) {
    std::vector<chash::Member> out;
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back({"10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + ":8080", 1});
    }
    return out;
}

// The id chosen for every key.
std::vector<const std::string*> assign(const chash::Picker& picker,
                                       const std::vector<chash::Member>& members,
                                       const std::vector<std::uint64_t>& keys) {
    chash::AllEligible all;
    std::vector<const std::string*> out(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) out[i] = &members[picker.pick(keys[i], 0, all)].id;
    return out;
}

double moved_share(const std::vector<const std::string*>& a, const std::vector<const std::string*>& b) {
    std::size_t moved = 0;
    for (std::size_t i = 0; i < a.size(); ++i) moved += *a[i] != *b[i];
    return static_cast<double>(moved) / static_cast<double>(a.size());
}

struct Row {
    double max_over_mean;
    double moved_remove;
    double moved_add;
    double lookup_ns;
    double build_ms;
};

Row measure(chash::Algorithm algorithm, std::size_t n, std::size_t table_size,
            const std::vector<std::uint64_t>& keys) {
    Row row{};
    const std::vector<chash::Member> all_members = backends(n + kTrials);
    const std::vector<chash::Member> members(all_members.begin(), all_members.begin() + static_cast<std::ptrdiff_t>(n));

    const auto t0 = Clock::now();
    auto picker = chash::make_picker(algorithm, members, table_size);
    row.build_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();

    chash::AllEligible all;
    std::vector<std::size_t> load(n);
    for (std::uint64_t k : keys) ++load[picker->pick(k, 0, all)];
    const double mean = static_cast<double>(keys.size()) / static_cast<double>(n);
    row.max_over_mean = static_cast<double>(*std::max_element(load.begin(), load.end())) / mean;

    const auto base = assign(*picker, members, keys);
    for (std::size_t t = 0; t < kTrials; ++t) {
        std::vector<chash::Member> removed = members;
        removed.erase(removed.begin() + static_cast<std::ptrdiff_t>(t * n / kTrials));
        row.moved_remove += moved_share(base, assign(*chash::make_picker(algorithm, removed, table_size), removed, keys));
        std::vector<chash::Member> added = members;
        added.push_back(all_members[n + t]);
        row.moved_add += moved_share(base, assign(*chash::make_picker(algorithm, added, table_size), added, keys));
    }
    row.moved_remove /= kTrials;
    row.moved_add /= kTrials;

    // Best of three passes, to keep a neighbour's burst out of the figure.
    row.lookup_ns = 1e300;
    std::size_t sink = 0;
    for (int pass = 0; pass < 3; ++pass) {
        const auto start = Clock::now();
        for (std::uint64_t k : keys) sink += picker->pick(k, 0, all);
        const double ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
        row.lookup_ns = std::min(row.lookup_ns, ns / static_cast<double>(keys.size()));
    }
    if (sink == 1) std::puts("");  // keeps the timed loop from being optimised away
    return row;
}

double cpu_ms() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) / 1e6;
}

// 100 members resolved for "chat.local:9000", then 101 (one joins), 21 times;
// prints the median and the largest CPU time of expand + Generation.
void membership_change_cost() {
    auto loaded = config::load_string(R"([[listener]]
listen = "127.0.0.1:8080"
[[pool]]
name = "chat"
algorithm = "maglev"
[[pool.backend]]
address = "chat.local:9000"
)", "bench.toml");
    const auto file = std::get<std::shared_ptr<const config::Config>>(loaded);
    std::vector<discovery::Record> records;
    for (int i = 0; i < 101; ++i) records.push_back({"10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1), 9000, 1});
    discovery::Resolved hundred{{"chat.local:9000", discovery::normalise(std::span(records).first(100))}};
    discovery::Resolved hundred_one{{"chat.local:9000", discovery::normalise(records)}};
    auto previous = std::make_shared<const runtime::Generation>(discovery::expand(*file, hundred), 1, nullptr);
    std::vector<double> times;
    for (std::uint64_t n = 2; n < 23; ++n) {
        const double start = cpu_ms();
        auto next = std::make_shared<const runtime::Generation>(
            discovery::expand(*file, n % 2 ? hundred : hundred_one), n, previous.get());
        times.push_back(cpu_ms() - start);
        previous = next;
    }
    std::sort(times.begin(), times.end());
    std::printf("\nmembership change of a 100-member Maglev pool (M=65537), expand + Generation, CPU: "
                "median %.2f ms, max %.2f ms over %zu changes\n",
                times[times.size() / 2], times.back(), times.size());
}

}  // namespace

int main() {
    std::vector<std::uint64_t> keys(kKeys);
    for (std::size_t i = 0; i < kKeys; ++i) keys[i] = chash::hash_bytes("user-" + std::to_string(i));

    std::printf("| algorithm | back ends | max/mean | moved on removal (ideal) | moved on addition (ideal) "
                "| lookup ns/op | build ms |\n");
    std::printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    struct Config {
        chash::Algorithm algorithm;
        std::size_t backends;
        std::size_t table_size;
    };
    const Config configs[] = {
        {chash::Algorithm::Ring, 3, 65537},     {chash::Algorithm::Ring, 10, 65537},
        {chash::Algorithm::Ring, 100, 65537},   {chash::Algorithm::Maglev, 3, 65537},
        {chash::Algorithm::Maglev, 10, 65537},  {chash::Algorithm::Maglev, 100, 65537},
        {chash::Algorithm::Maglev, 100, 131071},  {chash::Algorithm::Maglev, 100, 655373},
    };
    for (const Config& c : configs) {
        const Row r = measure(c.algorithm, c.backends, c.table_size, keys);
        const std::string name = c.algorithm == chash::Algorithm::Ring ? "ring"
                                                                       : "maglev M=" + std::to_string(c.table_size);
        std::printf("| %s | %zu | %.3f | %.4f (%.4f) | %.4f (%.4f) | %.1f | %.2f |\n", name.c_str(), c.backends,
                    r.max_over_mean, r.moved_remove, 1.0 / static_cast<double>(c.backends), r.moved_add,
                    1.0 / static_cast<double>(c.backends + 1), r.lookup_ns, r.build_ms);
    }
    membership_change_cost();
    return 0;
}
