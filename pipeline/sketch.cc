#include "pipeline/sketch.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <limits>

namespace inferscope {
namespace {

// Accuracy and bin limits that keep every bin index inside int32 and a decoded sketch's memory
// bounded. The constructor clamps into them; the decoder rejects anything outside.
constexpr double kMinRelativeAccuracy = 1e-6;
constexpr double kMaxRelativeAccuracy = 0.5;
constexpr int kMaxMaxBins = 1 << 20;

constexpr uint8_t kFormatVersion = 1;

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0, i = 0; i < 10; ++i, shift += 7) {
    if (in->empty()) return false;
    const auto byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    if (i == 9 && byte > 1) return false;  // more than 64 bits
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

uint64_t ZigZag(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

void PutDouble(std::string* out, double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(bits >> (8 * i)));
}

bool GetDouble(std::string_view* in, double* d) {
  if (in->size() < 8) return false;
  uint64_t bits = 0;
  for (int i = 0; i < 8; ++i) bits |= static_cast<uint64_t>(static_cast<uint8_t>((*in)[i])) << (8 * i);
  in->remove_prefix(8);
  std::memcpy(d, &bits, sizeof(bits));
  return true;
}

}  // namespace

DDSketch::DDSketch(double relative_accuracy, int max_bins) {
  if (!(relative_accuracy >= kMinRelativeAccuracy)) relative_accuracy = kMinRelativeAccuracy;
  if (relative_accuracy > kMaxRelativeAccuracy) relative_accuracy = kMaxRelativeAccuracy;
  relative_accuracy_ = relative_accuracy;
  max_bins_ = std::clamp(max_bins, 1, kMaxMaxBins);
  gamma_ = (1 + relative_accuracy_) / (1 - relative_accuracy_);
  log_gamma_inverse_ = 1 / std::log(gamma_);
  // Smallest magnitude whose bin index and representative value stay normal doubles.
  min_indexable_ = DBL_MIN * gamma_;
}

// Bin i holds magnitudes in (gamma^(i-1), gamma^i].
int32_t DDSketch::Index(double magnitude) const {
  return static_cast<int32_t>(std::ceil(std::log(magnitude) * log_gamma_inverse_));
}

// The representative 2 gamma^i / (gamma + 1) is within relative_accuracy of both ends of bin i.
double DDSketch::Value(int32_t index) const {
  double v = std::pow(gamma_, index) * (2 / (gamma_ + 1));
  return std::min(v, DBL_MAX);
}

void DDSketch::Add(double value) {
  if (value > min_indexable_) {
    if (value > DBL_MAX) return;
    positive_.Add(Index(value), 1, max_bins_);
  } else if (value < -min_indexable_) {
    if (value < -DBL_MAX) return;
    negative_.Add(Index(-value), 1, max_bins_);
  } else if (value == value) {
    ++zero_count_;
  } else {
    return;  // NaN
  }
  ++count_;
}

// Invariant: when non-empty, the first and last bins of `counts` are non-zero, so equal contents
// have equal representations; the span never exceeds max_bins.
void DDSketch::Store::Add(int32_t index, uint64_t n, int max_bins) {
  total += n;
  const int64_t size = static_cast<int64_t>(counts.size());
  const int64_t rel = static_cast<int64_t>(index) - offset;
  if (rel >= 0 && rel < size) {
    counts[rel] += n;
    return;
  }
  if (size == 0) {
    counts.push_back(n);  // reuses capacity after Clear()
    offset = index;
    return;
  }
  const int64_t lo = std::min<int64_t>(offset, index);
  const int64_t hi = std::max<int64_t>(offset + size - 1, index);
  const int64_t new_lo = std::max<int64_t>(lo, hi - max_bins + 1);
  Reshape(static_cast<int32_t>(new_lo), static_cast<int32_t>(hi));
  counts[std::max<int64_t>(index, new_lo) - new_lo] += n;
}

// Makes `counts` cover [new_lo, new_hi] (new_hi >= current high end); bins below new_lo are folded
// into bin new_lo (collapsing the lowest magnitudes when the range exceeds max_bins).
void DDSketch::Store::Reshape(int32_t new_lo, int32_t new_hi) {
  const size_t new_size = static_cast<size_t>(static_cast<int64_t>(new_hi) - new_lo + 1);
  const size_t old_size = counts.size();
  if (old_size == 0) {
    counts.assign(new_size, 0);
  } else if (new_lo <= offset) {
    const size_t front = static_cast<size_t>(static_cast<int64_t>(offset) - new_lo);
    counts.resize(new_size, 0);
    if (front > 0) {
      std::move_backward(counts.begin(), counts.begin() + old_size,
                         counts.begin() + old_size + front);
      std::fill(counts.begin(), counts.begin() + front, 0);
    }
  } else {
    const size_t drop =
        std::min(static_cast<size_t>(static_cast<int64_t>(new_lo) - offset), old_size);
    uint64_t folded = 0;
    for (size_t i = 0; i < drop; ++i) folded += counts[i];
    counts.erase(counts.begin(), counts.begin() + drop);
    counts.resize(new_size, 0);
    counts[0] += folded;
  }
  offset = new_lo;
}

void DDSketch::Store::MergeFrom(const Store& other, int max_bins) {
  if (other.counts.empty()) return;
  const int64_t other_lo = other.offset;
  const int64_t other_hi = other_lo + static_cast<int64_t>(other.counts.size()) - 1;
  int64_t lo = other_lo;
  int64_t hi = other_hi;
  if (!counts.empty()) {
    lo = std::min<int64_t>(lo, offset);
    hi = std::max<int64_t>(hi, offset + static_cast<int64_t>(counts.size()) - 1);
  }
  const int64_t new_lo = std::max<int64_t>(lo, hi - max_bins + 1);
  if (counts.empty() || new_lo != offset ||
      hi != offset + static_cast<int64_t>(counts.size()) - 1) {
    Reshape(static_cast<int32_t>(new_lo), static_cast<int32_t>(hi));
  }
  // Bins of `other` below new_lo collapse into the lowest bin.
  size_t i = 0;
  const size_t n = other.counts.size();
  uint64_t folded = 0;
  for (; i < n && other_lo + static_cast<int64_t>(i) < new_lo; ++i) folded += other.counts[i];
  counts[0] += folded;
  uint64_t* dst = counts.data() + (other_lo + static_cast<int64_t>(i) - new_lo);
  for (; i < n; ++i) *dst++ += other.counts[i];
  total += other.total;
}

void DDSketch::Store::Clear() {
  counts.clear();
  offset = 0;
  total = 0;
}

bool DDSketch::Store::operator==(const Store& other) const {
  return total == other.total && counts == other.counts && (counts.empty() || offset == other.offset);
}

Status DDSketch::Merge(const DDSketch& other) {
  if (other.relative_accuracy_ != relative_accuracy_) {
    return Status::InvalidArgument("DDSketch::Merge: relative accuracy differs");
  }
  if (other.count_ == 0) return Status::Ok();
  positive_.MergeFrom(other.positive_, max_bins_);
  negative_.MergeFrom(other.negative_, max_bins_);
  zero_count_ += other.zero_count_;
  count_ += other.count_;
  return Status::Ok();
}

// The index of the bin holding the element of 0-based rank `rank` (the first bin whose
// cumulative count exceeds it), scanning from the low end.
int32_t DDSketch::Store::IndexAtRank(double rank) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    if (static_cast<double>(cumulative) > rank) return offset + static_cast<int32_t>(i);
  }
  return offset + static_cast<int32_t>(counts.size()) - 1;
}

double DDSketch::Quantile(double q) const {
  if (count_ == 0 || !(q >= 0 && q <= 1)) return std::numeric_limits<double>::quiet_NaN();
  const double rank = q * static_cast<double>(count_ - 1);
  const auto negatives = static_cast<double>(negative_.total);
  if (rank < negatives) {
    // Negative values in increasing order are magnitudes in decreasing order.
    return -Value(negative_.IndexAtRank(negatives - 1 - rank));
  }
  if (rank < negatives + static_cast<double>(zero_count_)) return 0;
  return Value(positive_.IndexAtRank(rank - negatives - static_cast<double>(zero_count_)));
}

void DDSketch::Clear() {
  positive_.Clear();
  negative_.Clear();
  zero_count_ = 0;
  count_ = 0;
}

bool DDSketch::operator==(const DDSketch& other) const {
  return relative_accuracy_ == other.relative_accuracy_ && max_bins_ == other.max_bins_ &&
         zero_count_ == other.zero_count_ && count_ == other.count_ &&
         positive_ == other.positive_ && negative_ == other.negative_;
}

// Format (version 1):
//   u8 version | f64 relative_accuracy | varint max_bins | varint zero_count |
//   positive store | negative store
// A store is: varint non-zero bins, then per bin varint index (zigzag of the first index, then the
// gap to the previous one) and varint count.
void DDSketch::EncodeTo(std::string* out) const {
  out->push_back(static_cast<char>(kFormatVersion));
  PutDouble(out, relative_accuracy_);
  PutVarint(out, static_cast<uint64_t>(max_bins_));
  PutVarint(out, zero_count_);
  for (const Store* store : {&positive_, &negative_}) {
    uint64_t nonzero = 0;
    for (uint64_t c : store->counts) nonzero += c != 0 ? 1 : 0;
    PutVarint(out, nonzero);
    int64_t prev = 0;
    bool first = true;
    for (size_t i = 0; i < store->counts.size(); ++i) {
      if (store->counts[i] == 0) continue;
      const int64_t index = static_cast<int64_t>(store->offset) + static_cast<int64_t>(i);
      PutVarint(out, first ? ZigZag(index) : static_cast<uint64_t>(index - prev));
      PutVarint(out, store->counts[i]);
      prev = index;
      first = false;
    }
  }
}

Status DDSketch::DecodeFrom(std::string_view* in, DDSketch* out) {
  std::string_view p = *in;
  auto corrupt = [](std::string_view what) {
    std::string message = "DDSketch: ";
    message.append(what);
    return Status::Corruption(std::move(message));
  };
  if (p.empty() || static_cast<uint8_t>(p.front()) != kFormatVersion) {
    return corrupt("unknown format version");
  }
  p.remove_prefix(1);
  double accuracy = 0;
  uint64_t max_bins = 0;
  uint64_t zero_count = 0;
  if (!GetDouble(&p, &accuracy) || !GetVarint(&p, &max_bins) || !GetVarint(&p, &zero_count)) {
    return corrupt("truncated header");
  }
  if (!(accuracy >= kMinRelativeAccuracy && accuracy <= kMaxRelativeAccuracy)) {
    return corrupt("relative accuracy out of range");
  }
  if (max_bins < 1 || max_bins > static_cast<uint64_t>(kMaxMaxBins)) {
    return corrupt("max_bins out of range");
  }
  DDSketch sketch(accuracy, static_cast<int>(max_bins));
  // Every finite magnitude maps into [min_index, max_index].
  const int64_t min_index = sketch.Index(sketch.min_indexable_);
  const int64_t max_index = sketch.Index(DBL_MAX);
  uint64_t count = zero_count;
  for (Store* store : {&sketch.positive_, &sketch.negative_}) {
    uint64_t bins = 0;
    if (!GetVarint(&p, &bins)) return corrupt("truncated bin count");
    if (bins > max_bins || bins > p.size() / 2) return corrupt("too many bins");
    int64_t first_index = 0;
    int64_t index = 0;
    for (uint64_t b = 0; b < bins; ++b) {
      uint64_t raw = 0;
      uint64_t c = 0;
      if (!GetVarint(&p, &raw) || !GetVarint(&p, &c)) return corrupt("truncated bin");
      if (b == 0) {
        index = UnZigZag(raw);
        if (index < min_index || index > max_index) return corrupt("bin index out of range");
        first_index = index;
        store->counts.reserve(static_cast<size_t>(std::min<uint64_t>(bins, max_bins)));
        store->offset = static_cast<int32_t>(index);
      } else {
        if (raw == 0 || raw > static_cast<uint64_t>(max_index - index)) {
          return corrupt("bin indices not increasing or out of range");
        }
        index += static_cast<int64_t>(raw);
        if (index - first_index + 1 > static_cast<int64_t>(max_bins)) {
          return corrupt("bins span more than max_bins");
        }
      }
      if (c == 0) return corrupt("empty bin");
      if (store->total + c < store->total || count + c < count) return corrupt("count overflow");
      store->counts.resize(static_cast<size_t>(index - first_index + 1), 0);
      store->counts.back() = c;
      store->total += c;
      count += c;
    }
  }
  sketch.zero_count_ = zero_count;
  sketch.count_ = count;
  *out = std::move(sketch);
  *in = p;
  return Status::Ok();
}

}  // namespace inferscope
