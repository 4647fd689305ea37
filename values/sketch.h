#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/status.h"

namespace inferscope {

// DDSketch is a mergeable quantile sketch with relative-error guarantees (Masson, Rim & Lee, VLDB
// 2019): every quantile it returns is within `relative_accuracy` of the exact value of the
// requested rank. Values map to logarithmic bins; positives, negatives and zero are kept apart.
//
// Memory is bounded: at most `max_bins` bins per sign; past that the lowest-magnitude bins are
// collapsed into one (the accuracy guarantee then holds for the upper quantiles only, as in the
// paper). Adding a value allocates only when the bin range grows (or a bin count outgrows its
// width, see below), so a reused sketch reaches a steady state without allocation. Merging
// requires equal accuracy parameters.
//
// Bin counts are stored 8 bits wide and promoted to 16, 32 and then 64 bits when a count would
// overflow: with many series, inserts are bound by cache misses, and narrow bins keep the hot bins
// of ten thousands of sketches in far fewer cache lines (and a pane of a few values in few bytes).
// The width is invisible to callers.
//
// Memory (issue 15: an engine keeps a few sketches per series): the object is 40 bytes. The
// accuracy parameters are shared (one immutable copy for the defaults every engine sketch uses; a
// sketch with other parameters owns a copy), the zero count is implied (count minus the bins),
// negative values get their store only when the first one arrives, and up to 8 bytes of bins
// (eight 8-bit counts: a pane of a steady gauge) live inside the object instead of on the heap.
//
// Concurrency: none; one owner.
class DDSketch {
 public:
  static constexpr double kDefaultRelativeAccuracy = 0.01;
  static constexpr int kDefaultMaxBins = 2048;
  // The most values one sketch holds: AddUniform adds at most up to it, Merge and decoding refuse
  // to pass it, so no bin or total can overflow (a real stream would need centuries to get there;
  // a hostile histogram delta could ask for 2^64 at once).
  static constexpr uint64_t kMaxCount = uint64_t{1} << 62;

  explicit DDSketch(double relative_accuracy = kDefaultRelativeAccuracy,
                    int max_bins = kDefaultMaxBins);
  DDSketch(const DDSketch& other);
  // A moved-from sketch is empty, with the default parameters.
  DDSketch(DDSketch&& other) noexcept;
  DDSketch& operator=(const DDSketch& other);
  DDSketch& operator=(DDSketch&& other) noexcept;
  ~DDSketch() = default;

  // Adds one value. NaN and infinities are ignored (the decoder rejects them before this point).
  void Add(double value);
  // Adds `n` values spread uniformly over (lo, hi] (a histogram bucket's count, as Prometheus'
  // histogram_quantile interpolates within a bucket): each sketch bin overlapping the interval
  // receives the share of `n` proportional to its overlap (cumulative rounding, so the shares add
  // up to exactly `n`). Negative bounds are clamped to 0 (latency histograms); hi <= 0 puts all
  // `n` in the zero bin. Non-finite bounds, hi < lo or n == 0: nothing is added. `n` is cut to
  // what keeps count() <= kMaxCount.
  void AddUniform(double lo, double hi, uint64_t n);
  // A hint that `value` is about to be added: prefetches the cache line of its bin. No effect on
  // the contents.
  void PrefetchBin(double value) const;
  // Adds the contents of `other`. Fails (adding nothing) when the accuracy parameters differ or
  // the count would pass kMaxCount.
  Status Merge(const DDSketch& other);
  // The value at quantile q in [0, 1]; NaN when empty.
  double Quantile(double q) const;

  uint64_t count() const { return count_; }
  bool empty() const { return count_ == 0; }
  // Calls `fn(value, count)` for every non-empty bin in increasing order of value, where `value`
  // represents the bin (the value Quantile returns for its ranks; 0 for the zero bin). Two sketches
  // with equal parameters give equal `value`s for equal bins, so their bins can be merged by value
  // (values/rank_test.h compares two sketches this way).
  template <typename Fn>
  void ForEachBin(Fn&& fn) const {
    if (negative_ != nullptr) {
      const Store& neg = negative_->store;
      for (uint32_t i = neg.size(); i-- > 0;) {
        if (uint64_t n = neg.Get(i)) fn(-Value(neg.offset() + static_cast<int32_t>(i)), n);
      }
    }
    if (const uint64_t zeros = zero_count(); zeros > 0) fn(0.0, zeros);
    for (uint32_t i = 0; i < positive_.size(); ++i) {
      if (uint64_t n = positive_.Get(i)) fn(Value(positive_.offset() + static_cast<int32_t>(i)), n);
    }
  }
  double relative_accuracy() const { return params_->relative_accuracy; }
  // Removes all values, keeping allocated capacity.
  void Clear();

  // Appends a compact binary encoding (varints, sparse bins) to `out`.
  void EncodeTo(std::string* out) const;
  // Decodes from the front of `*in` and advances it; Corruption on malformed bytes.
  static Status DecodeFrom(std::string_view* in, DDSketch* out);

  // Equal parameters and identical bin contents.
  bool operator==(const DDSketch& other) const;

  // Heap bytes the sketch holds (bin buffers, the negative store, owned parameters; without
  // allocator overhead). For memory accounting and tests.
  size_t HeapBytes() const;

 private:
  // The accuracy parameters and what is derived from them. Immutable once made.
  struct Params {
    double relative_accuracy;
    double gamma;
    double log_gamma_inverse;  // 1 / ln(gamma)
    double min_indexable;      // magnitudes below this count as zero
    int max_bins;
  };
  static Params MakeParams(double relative_accuracy, int max_bins);
  static const Params kDefaultParams;
  // Deletes parameters the sketch owns; the shared defaults are never deleted.
  struct ParamsDeleter {
    void operator()(const Params* p) const {
      if (p != &kDefaultParams) delete p;
    }
  };
  using ParamsPtr = std::unique_ptr<const Params, ParamsDeleter>;
  static ParamsPtr ShareOrCopy(const Params& p);

  // A dense run of bin counts for bins [offset, offset + size), 16 bytes. Counts are
  // `1 << width_log2` bytes wide (1, 2, 4 or 8). Up to 8 bytes of counts are kept inline (capacity
  // class 0); larger runs in a heap buffer of one of a geometric series of sizes (classes >= 1,
  // about 1.5x apart, sized to malloc's chunk sizes).
  class Store {
   public:
    Store() = default;
    Store(const Store& other);
    Store(Store&& other) noexcept;
    Store& operator=(const Store& other);
    Store& operator=(Store&& other) noexcept;
    ~Store();

    bool empty() const { return size_ == 0; }
    int32_t offset() const { return offset_; }
    uint32_t size() const { return size_; }
    uint64_t Get(uint32_t i) const;
    // The sum of the counts.
    uint64_t Total() const;
    // Adds 1 to bin `index`, growing the range (and collapsing below max_bins) as needed.
    void Increment(int32_t index, int max_bins) {
      const auto rel = static_cast<uint32_t>(static_cast<int64_t>(index) - offset_);
      if (rel < size_) {
        if (width_log2_ == 0) {
          uint8_t& c = reinterpret_cast<uint8_t*>(data())[rel];
          if (c != UINT8_MAX) {
            ++c;
            return;
          }
        } else if (width_log2_ == 1) {
          uint16_t& c = reinterpret_cast<uint16_t*>(data())[rel];
          if (c != UINT16_MAX) {
            ++c;
            return;
          }
        }
      }
      IncrementSlow(index, max_bins);
    }
    void PrefetchIndex(int32_t index) const {
      const auto rel = static_cast<uint32_t>(static_cast<int64_t>(index) - offset_);
      if (rel < size_ && capacity_class_ != 0) {
        __builtin_prefetch(heap_ + (static_cast<size_t>(rel) << width_log2_), 1);
      }
    }
    // Adds `n` >= 1 to bin `index` (growing, collapsing and widening as needed).
    void Add(int32_t index, uint64_t n, int max_bins);
    void MergeFrom(const Store& other, int max_bins);
    // Appends bin `index` with count `n` >= 1 above the current range (decoding). Returns false
    // when the span would exceed max_bins.
    bool Append(int64_t index, uint64_t n, int max_bins);
    int32_t IndexAtRank(double rank) const;
    // Scanning from the highest bin down, the first bin where the count of the values in it and
    // above reaches `from_top`; false when the whole store holds fewer.
    bool IndexFromTop(double from_top, int32_t* index) const;
    void Clear();
    bool operator==(const Store& other) const;
    size_t HeapBytes() const;

   private:
    unsigned char* data() { return capacity_class_ == 0 ? inline_ : heap_; }
    const unsigned char* data() const { return capacity_class_ == 0 ? inline_ : heap_; }
    uint32_t capacity_bytes() const;
    // Replaces the buffer with one of at least `bytes` bytes (contents not kept).
    void Reallocate(size_t bytes);
    void IncrementSlow(int32_t index, int max_bins);
    // Covers [new_lo, new_hi]; bins below new_lo fold into it.
    void Reshape(int32_t new_lo, int32_t new_hi);
    // Doubles the count width, keeping the contents.
    void Widen();
    void Set(uint32_t i, uint64_t v);
    uint64_t MaxCount() const {
      return width_log2_ == 3 ? UINT64_MAX : (uint64_t{1} << (8 << width_log2_)) - 1;
    }

    union {
      unsigned char* heap_;                      // capacity_class_ >= 1
      alignas(8) unsigned char inline_[8] = {};  // capacity_class_ == 0
    };
    int32_t offset_ = 0;
    uint32_t size_ : 22 = 0;  // max_bins <= 2^20
    uint32_t width_log2_ : 2 = 0;
    uint32_t capacity_class_ : 8 = 0;
  };
  static_assert(sizeof(Store) == 16);

  // The rarely used parts: negative values.
  struct Negatives {
    Store store;
    uint64_t count = 0;
  };

  int32_t Index(double magnitude) const;
  double Value(int32_t index) const;
  uint64_t zero_count() const {
    return count_ - (negative_ != nullptr ? negative_->count : 0) - positive_.Total();
  }
  Negatives& negatives() {
    if (negative_ == nullptr) negative_ = std::make_unique<Negatives>();
    return *negative_;
  }

  // What Add() touches comes first: with many series, inserts are bound by cache misses.
  uint64_t count_ = 0;
  ParamsPtr params_;
  Store positive_;
  std::unique_ptr<Negatives> negative_;  // null until the first negative value
};

static_assert(sizeof(DDSketch) == 40, "DDSketch grew: the engine keeps several per series");

}  // namespace inferscope
