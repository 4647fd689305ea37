#pragma once

#include <cstdint>
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
// paper). Adding a value allocates only when the bin range grows, so a reused sketch reaches a
// steady state without allocation. Merging requires equal accuracy parameters.
//
// Concurrency: none; one owner.
class DDSketch {
 public:
  static constexpr double kDefaultRelativeAccuracy = 0.01;
  static constexpr int kDefaultMaxBins = 2048;

  explicit DDSketch(double relative_accuracy = kDefaultRelativeAccuracy, int max_bins = kDefaultMaxBins);

  // Adds one value. NaN and infinities are ignored (the decoder rejects them before this point).
  void Add(double value);
  // Adds the contents of `other`. Fails when the accuracy parameters differ.
  Status Merge(const DDSketch& other);
  // The value at quantile q in [0, 1]; NaN when empty.
  double Quantile(double q) const;

  uint64_t count() const { return count_; }
  bool empty() const { return count_ == 0; }
  double relative_accuracy() const { return relative_accuracy_; }
  // Removes all values, keeping allocated capacity.
  void Clear();

  // Appends a compact binary encoding (varints, sparse bins) to `out`.
  void EncodeTo(std::string* out) const;
  // Decodes from the front of `*in` and advances it; Corruption on malformed bytes.
  static Status DecodeFrom(std::string_view* in, DDSketch* out);

  // Equal parameters and identical bin contents.
  bool operator==(const DDSketch& other) const;

 private:
  // A dense run of bin counts starting at bin index `offset`.
  struct Store {
    std::vector<uint64_t> counts;
    int32_t offset = 0;
    uint64_t total = 0;
    void Add(int32_t index, uint64_t n, int max_bins);
    void MergeFrom(const Store& other, int max_bins);
    // Covers [new_lo, new_hi]; bins below new_lo fold into it.
    void Reshape(int32_t new_lo, int32_t new_hi);
    int32_t IndexAtRank(double rank) const;
    void Clear();
    bool operator==(const Store& other) const;
  };

  int32_t Index(double magnitude) const;
  double Value(int32_t index) const;

  double relative_accuracy_;
  int max_bins_;
  double gamma_;
  double log_gamma_inverse_;  // 1 / ln(gamma)
  double min_indexable_;      // magnitudes below this count as zero
  Store positive_;
  Store negative_;
  uint64_t zero_count_ = 0;
  uint64_t count_ = 0;
};

}  // namespace inferscope
