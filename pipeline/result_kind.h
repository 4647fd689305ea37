#pragma once

#include <bit>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace inferscope {

// A result kind names one type of result that flows along topology edges (pane summaries, window
// summaries, alerts, dead letters; raw events too). A kind is declared once, as a tag type:
//
//   namespace kind {
//   struct PaneSummary {
//     using Value = inferscope::WindowSummary;                // what OutputBatch carries
//     static constexpr std::string_view kName = "pane_summary";  // unique, snake_case
//     static constexpr std::string_view kDescription = "A closed (or updated) pane of one series";
//   };
//   }
//
// Operators declare the kinds they read and emit, sinks the kinds they accept (pipeline/operator.h,
// pipeline/sink.h); topology validation checks every edge with them, the executor counts results
// per kind, and OutputBatch keeps one typed vector per kind (pipeline/summary.h). Adding a kind
// touches its declaration, its producers and its consumers, nothing else.
//
// Ids: each kind gets a small dense id the first time KindOf<K>() is called (like a type index;
// there is no static registration). Ids are process-wide and below kMaxResultKinds, so per-kind
// tables are plain arrays indexed by id.
// Concurrency: KindOf and the lookups below are thread-safe.
// Limitations: at most kMaxResultKinds kinds per process; declaring two kinds with one name (or
// more than the maximum) is a programming error and aborts with a message at first use.

using KindId = uint8_t;
inline constexpr size_t kMaxResultKinds = 32;

namespace kind_internal {
// Returns the id of the kind named `name` declared by the tag type identified by `tag`, assigning
// the next id on first sight. Aborts if another tag already took the name, or ids run out.
KindId Intern(std::string_view name, std::string_view description, const void* tag);
template <typename K>
inline constexpr char kTag = 0;  // one address per tag type
}  // namespace kind_internal

// The dense id of kind K (see above). Cheap after the first call (one guard check).
template <typename K>
KindId KindOf() {
  static const KindId id =
      kind_internal::Intern(K::kName, K::kDescription, &kind_internal::kTag<K>);
  return id;
}

// A kind's declared name and description; empty for an id never handed out.
std::string_view KindName(KindId id);
std::string_view KindDescription(KindId id);
// Every kind that has an id so far, by id.
std::vector<KindId> KnownKinds();

// A set of kinds (a bit per id).
class KindSet {
 public:
  constexpr KindSet() = default;
  KindSet(std::initializer_list<KindId> ids) {
    for (KindId id : ids) Add(id);
  }
  // KindSet::Of<kind::PaneSummary, kind::DeadLetter>()
  template <typename... K>
  static KindSet Of() {
    return KindSet{KindOf<K>()...};
  }

  void Add(KindId id) { bits_ |= uint32_t{1} << id; }
  KindSet& operator|=(KindSet other) {
    bits_ |= other.bits_;
    return *this;
  }
  bool Has(KindId id) const { return (bits_ >> id) & 1; }
  template <typename K>
  bool Has() const {
    return Has(KindOf<K>());
  }
  bool empty() const { return bits_ == 0; }
  size_t size() const { return static_cast<size_t>(std::popcount(bits_)); }
  KindSet Intersect(KindSet other) const { return FromBits(bits_ & other.bits_); }
  KindSet Without(KindSet other) const { return FromBits(bits_ & ~other.bits_); }
  bool operator==(const KindSet&) const = default;

  // Calls fn(KindId) for each member, in id order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (uint32_t b = bits_; b != 0; b &= b - 1) fn(static_cast<KindId>(std::countr_zero(b)));
  }
  // "pane_summary, dead_letter" (in id order); "nothing" when empty.
  std::string Names() const;

  static constexpr KindSet FromBits(uint32_t bits) {
    KindSet s;
    s.bits_ = bits;
    return s;
  }
  uint32_t bits() const { return bits_; }

 private:
  static_assert(kMaxResultKinds <= 32, "KindSet keeps one bit per kind in a uint32_t");
  uint32_t bits_ = 0;
};

// Raw events, as sources emit them and operators read them in Process (they travel in
// EventBatch, never in OutputBatch). An operator reads events when its Reads() contains this.
struct Event;
namespace kind {
struct Event {
  using Value = ::inferscope::Event;
  static constexpr std::string_view kName = "event";
  static constexpr std::string_view kDescription =
      "Raw events from a source (travel in event batches, read by Process)";
};
}  // namespace kind

}  // namespace inferscope
