// Ketama-style consistent-hash ring (Karger et al. 1997; twemproxy/nginx
// "ketama"), with our own point derivation:
//
//   member m of weight w owns points  hash_bytes(m.id + "-" + decimal(i))
//   for i = 0 .. points_per_weight * w - 1.
//
// A key with hash h belongs to the first point >= h, wrapping past the last
// point to the first; an index over the top bits of the hashes narrows that
// search to about one point. Its preference order continues clockwise, listing each
// member the first time one of its points is met. Points are sorted by
// (hash, member id), so two members whose points collide are ordered by id,
// never by their position in the configuration. Changing any of this
// re-pins every session in production (see the golden vectors in
// tests/unit/test_ring.cpp).
#include <algorithm>
#include <string>

#include "balance/pickers.h"

namespace chash {

namespace {

class Ring final : public Picker {
public:
    Ring(std::vector<std::uint64_t> points, std::vector<std::uint32_t> owners,
         std::size_t member_count)
        : points_(std::move(points)), walk_(std::move(owners), member_count), size_(member_count) {
        // About one point per bucket: 2^bits >= number of points.
        while (bits_ < 32 && (std::size_t{1} << bits_) < points_.size()) ++bits_;
        const std::size_t buckets = std::size_t{1} << bits_;
        bucket_start_.resize(buckets + 1);
        std::size_t i = 0;
        for (std::size_t b = 0; b <= buckets; ++b) {
            while (i < points_.size() && bucket_of(points_[i]) < b) ++i;
            bucket_start_[b] = static_cast<std::uint32_t>(i);
        }
    }

    std::size_t pick(std::uint64_t key_hash, unsigned attempt,
                     const Eligibility& eligibility) const override {
        if (points_.empty()) return kNone;
        // lower_bound over the whole ring, narrowed first to the points that
        // share the key's top bits: every point before the bucket is smaller
        // than the key, every point after it larger.
        const std::size_t b = bucket_of(key_hash);
        const auto first = points_.begin() + bucket_start_[b];
        const auto last = points_.begin() + bucket_start_[b + 1];
        std::size_t start = static_cast<std::size_t>(std::lower_bound(first, last, key_hash) - points_.begin());
        if (start == points_.size()) start = 0;  // past the last point: wrap
        return walk_.pick(start, attempt, eligibility);
    }

    std::size_t size() const override { return size_; }

private:
    std::size_t bucket_of(std::uint64_t hash) const {
        return bits_ == 0 ? 0 : static_cast<std::size_t>(hash >> (64 - bits_));
    }

    std::vector<std::uint64_t> points_;  // sorted; points_[i] belongs to walk_.member_at(i)
    CircularWalk walk_;
    std::size_t size_;
    unsigned bits_ = 0;                       // the top <bits_> of a hash select its bucket
    std::vector<std::uint32_t> bucket_start_;  // first point of each bucket; one extra = size
};

}  // namespace

std::unique_ptr<Picker> make_ring(std::span<const Member> members, std::uint32_t points_per_weight) {
    struct Point {
        std::uint64_t hash;
        std::uint32_t member;
    };
    std::size_t total = 0;
    for (const Member& m : members) total += std::size_t{m.weight} * points_per_weight;
    std::vector<Point> points;
    points.reserve(total);
    std::string name;
    for (std::size_t k = 0; k < members.size(); ++k) {
        const std::size_t count = std::size_t{members[k].weight} * points_per_weight;
        for (std::size_t i = 0; i < count; ++i) {
            name.assign(members[k].id);
            name += '-';
            name += std::to_string(i);
            points.push_back({hash_bytes(name), static_cast<std::uint32_t>(k)});
        }
    }
    std::sort(points.begin(), points.end(), [&](const Point& a, const Point& b) {
        if (a.hash != b.hash) return a.hash < b.hash;
        return members[a.member].id < members[b.member].id;
    });
    std::vector<std::uint64_t> hashes(points.size());
    std::vector<std::uint32_t> owners(points.size());
    for (std::size_t i = 0; i < points.size(); ++i) {
        hashes[i] = points[i].hash;
        owners[i] = points[i].member;
    }
    return std::make_unique<Ring>(std::move(hashes), std::move(owners), members.size());
}

}  // namespace chash
