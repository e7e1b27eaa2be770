// libFuzzer target for the DNS answer handling of dynamic pools
// (config/discovery.h): never crashes, and the members and SRV records it
// keeps are sorted, unique, bounded, and independent of the answer's order.
//
// Input layout: a sequence of records, each = 1 byte n, then n bytes of
// address text (or SRV target), 2 bytes port, 2 bytes weight, 1 byte
// priority; a truncated last record is dropped. The whole input is also
// checked as a "NAME:PORT" address.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "config/discovery.h"

namespace {

void require(bool condition) {
    if (!condition) std::abort();
}

bool same(const std::vector<discovery::Member>& a, const std::vector<discovery::Member>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
        return x.id() == y.id() && x.weight == y.weight;
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string whole(reinterpret_cast<const char*>(data), size);
    std::string name;
    std::uint16_t port = 0;
    if (discovery::named_address_problem(whole, name, port).empty()) {
        require(port != 0);
        require(discovery::name_problem(name).empty());
    }

    std::vector<discovery::Record> records;
    std::vector<discovery::SrvRecord> srv;
    std::size_t i = 0;
    while (i < size) {
        const std::size_t n = data[i++];
        if (i + n + 5 > size) break;
        const std::string text(reinterpret_cast<const char*>(data + i), n);
        i += n;
        const std::uint16_t p = static_cast<std::uint16_t>(data[i] << 8 | data[i + 1]);
        const std::uint16_t w = static_cast<std::uint16_t>(data[i + 2] << 8 | data[i + 3]);
        const std::uint8_t priority = data[i + 4];
        i += 5;
        records.push_back({text, p, w});
        srv.push_back({text, p, priority, w});
    }

    const auto members = discovery::normalise(records);
    for (std::size_t k = 0; k < members.size(); ++k) {
        require(members[k].weight >= 1 && members[k].weight <= discovery::kMaxWeight);
        if (k > 0) require(members[k - 1].id() < members[k].id());
    }
    std::vector<discovery::Record> reversed(records.rbegin(), records.rend());
    require(same(members, discovery::normalise(reversed)));

    const auto usable = discovery::usable_srv(srv);
    for (std::size_t k = 0; k < usable.size(); ++k) {
        require(usable[k].port != 0 && usable[k].priority == usable[0].priority);
        if (k > 0) {
            require(usable[k - 1].target < usable[k].target ||
                    (usable[k - 1].target == usable[k].target && usable[k - 1].port < usable[k].port));
        }
    }
    std::vector<discovery::SrvRecord> srv_reversed(srv.rbegin(), srv.rend());
    const auto again = discovery::usable_srv(srv_reversed);
    require(again.size() == usable.size());
    for (std::size_t k = 0; k < again.size(); ++k) {
        require(again[k].target == usable[k].target && again[k].port == usable[k].port &&
                again[k].weight == usable[k].weight);
    }

    std::vector<std::string> ids;
    for (const auto& m : members) ids.push_back(m.id());
    const discovery::Diff d = discovery::diff(ids, {});
    require(d.removed.size() == ids.size() && d.added.empty() && d.kept.empty());
    return 0;
}
