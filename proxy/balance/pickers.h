// Internals shared by the two consistent-hashing tables (ring.cpp, maglev.cpp).
// Both reduce to the same shape: a circular sequence of entries, each naming a
// member, and a start position derived from the key. The key's preference
// order is the sequence of distinct members met walking forward from the
// start, wrapping at the end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "balance/chash.h"

namespace chash {

// Points each member gets on the ring per unit of weight (see ring.cpp).
// Twice ketama's 160: with 160, ten equal back ends measured a max/mean load
// of 1.13 on average and up to 1.25; with 320, 1.08 and up to 1.13 (30 sets
// of ids, 200,000 keys each).
inline constexpr std::uint32_t kRingPointsPerWeight = 320;

// A circular sequence of member indices with, for each entry, the distance
// back to the previous entry of the same member (the sequence length when the
// member appears only once). That distance answers "was this member already
// met in this walk?" in O(1) and without memory: walking from <start>, the
// entry at distance d is a member's first appearance iff back[i] > d.
class CircularWalk {
public:
    // <members> are indices into the caller's member span, each < <member_count>.
    CircularWalk(std::vector<std::uint32_t> members, std::size_t member_count);

    std::size_t length() const { return members_.size(); }
    std::uint32_t member_at(std::size_t i) const { return members_[i]; }

    // The <attempt>-th eligible distinct member walking forward from entry
    // <start> (< length()), or kNone. Visits each entry at most once and stops
    // as soon as every member present has been met.
    std::size_t pick(std::size_t start, unsigned attempt, const Eligibility& eligibility) const;

private:
    std::vector<std::uint32_t> members_;
    std::vector<std::uint32_t> back_;
    std::size_t distinct_ = 0;  // members that appear at least once
};

// Builders behind make_picker, which validates their input first: distinct
// ids, and for Maglev a prime <table_size>.
std::unique_ptr<Picker> make_ring(std::span<const Member> members, std::uint32_t points_per_weight);
std::unique_ptr<Picker> make_maglev(std::span<const Member> members, std::size_t table_size);

bool is_prime(std::size_t n);

}  // namespace chash
