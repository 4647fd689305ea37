#include "values/sketch.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "pipeline/coding.h"
#include "pipeline/int_math.h"

namespace inferscope {
namespace {

// Accuracy and bin limits that keep every bin index inside int32 and a decoded sketch's memory
// bounded. The constructor clamps into them; the decoder rejects anything outside.
constexpr double kMinRelativeAccuracy = 1e-6;
constexpr double kMaxRelativeAccuracy = 0.5;
constexpr int kMaxMaxBins = 1 << 20;

constexpr uint8_t kFormatVersion = 1;

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

// Bin i holds magnitudes in (gamma^(i-1), gamma^i]. |x| stays below 2^29 (see
// kMinRelativeAccuracy), so the integer ceiling below is exact.
int32_t DDSketch::Index(double magnitude) const {
  const double x = std::log(magnitude) * log_gamma_inverse_;
  const auto truncated = static_cast<int32_t>(x);
  return truncated + (x > truncated ? 1 : 0);
}

// The representative 2 gamma^i / (gamma + 1) is within relative_accuracy of both ends of bin i.
double DDSketch::Value(int32_t index) const {
  double v = std::pow(gamma_, index) * (2 / (gamma_ + 1));
  return std::min(v, DBL_MAX);
}

void DDSketch::Add(double value) {
  if (value > min_indexable_) {
    if (value > DBL_MAX) return;
    positive_.Increment(Index(value), max_bins_);
  } else if (value < -min_indexable_) {
    if (value < -DBL_MAX) return;
    negative_.Increment(Index(-value), max_bins_);
    ++negative_count_;
  } else if (value == value) {
    ++zero_count_;
  } else {
    return;  // NaN
  }
  ++count_;
}

void DDSketch::AddUniform(double lo, double hi, uint64_t n) {
  if (n == 0 || !std::isfinite(lo) || !std::isfinite(hi) || hi < lo) return;
  lo = std::max(lo, 0.0);
  if (hi <= min_indexable_) {
    zero_count_ += n;
    count_ += n;
    return;
  }
  if (lo == hi) {  // a point mass
    positive_.Add(Index(hi), n, max_bins_);
    count_ += n;
    return;
  }
  const double width = hi - lo;
  const auto total = static_cast<double>(n);
  uint64_t assigned = 0;
  // Bin i holds (gamma^(i-1), gamma^i]; walk down from the bin of `hi`.
  int32_t i = Index(hi);
  double lower = std::pow(gamma_, i - 1);
  // At most max_bins bins are distinct (lower ones collapse anyway); the walk ends earlier when
  // the interval's low end is reached or every count is placed.
  for (int steps = 0; assigned < n; ++steps, --i, lower /= gamma_) {
    const bool last = lower <= lo || lower <= min_indexable_ || steps + 1 >= max_bins_;
    uint64_t target = n;
    if (!last) {
      const double covered = (hi - lower) / width;  // share of the interval above `lower`
      target = std::min<uint64_t>(n, static_cast<uint64_t>(std::llround(covered * total)));
    }
    if (target > assigned) {
      positive_.Add(i, target - assigned, max_bins_);
      assigned = target;
    }
    if (last) break;
  }
  count_ += n;
}

// Only a hint, so the index need not be exact: log2 from the exponent bits plus a quadratic in
// the mantissa (error < 0.005, a fraction of a bin at 1%) costs a few instructions instead of a
// call to log, and lands in the right cache line all but rarely.
void DDSketch::PrefetchBin(double value) const {
  if (!(value > min_indexable_ && value <= DBL_MAX)) return;
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const auto exponent = static_cast<int32_t>(bits >> 52) - 1023;
  const uint64_t mantissa_bits = (bits & ((uint64_t{1} << 52) - 1)) | 0x3FF0000000000000ULL;
  double mantissa;
  std::memcpy(&mantissa, &mantissa_bits, sizeof(mantissa));
  const double f = mantissa - 1;  // [0, 1)
  const double log2 = exponent + f * (1.3466 - 0.3466 * f);
  positive_.PrefetchIndex(static_cast<int32_t>(log2 * (M_LN2 * log_gamma_inverse_)) + 1);
}

namespace {

unsigned char* AllocateBins(size_t bytes) {
  // new of unsigned char[] creates the uint16/32/64 count arrays implicitly (C++20) and aligns
  // them to at least 16 bytes.
  return bytes == 0 ? nullptr : new unsigned char[bytes];
}

// Calls f(T*) with the counts viewed as T = uint16_t, uint32_t or uint64_t.
template <typename F>
decltype(auto) WithWidth(int width_log2, unsigned char* bins, F&& f) {
  switch (width_log2) {
    case 1:
      return f(reinterpret_cast<uint16_t*>(bins));
    case 2:
      return f(reinterpret_cast<uint32_t*>(bins));
    default:
      return f(reinterpret_cast<uint64_t*>(bins));
  }
}

}  // namespace

DDSketch::Store::Store(const Store& other)
    : bins_(AllocateBins(static_cast<size_t>(other.size_) << other.width_log2_)),
      offset_(other.offset_),
      size_(other.size_),
      capacity_bytes_(other.size_ << other.width_log2_),
      width_log2_(other.width_log2_) {
  if (capacity_bytes_ > 0) std::memcpy(bins_, other.bins_, capacity_bytes_);
}

DDSketch::Store::Store(Store&& other) noexcept
    : bins_(std::exchange(other.bins_, nullptr)),
      offset_(std::exchange(other.offset_, 0)),
      size_(std::exchange(other.size_, 0)),
      capacity_bytes_(std::exchange(other.capacity_bytes_, 0)),
      width_log2_(std::exchange(other.width_log2_, 1)) {}

DDSketch::Store& DDSketch::Store::operator=(const Store& other) {
  if (this == &other) return *this;
  const uint32_t bytes = other.size_ << other.width_log2_;
  if (bytes > capacity_bytes_) {
    delete[] bins_;
    bins_ = AllocateBins(bytes);
    capacity_bytes_ = bytes;
  }
  if (bytes > 0) std::memcpy(bins_, other.bins_, bytes);
  offset_ = other.offset_;
  size_ = other.size_;
  width_log2_ = other.width_log2_;
  return *this;
}

DDSketch::Store& DDSketch::Store::operator=(Store&& other) noexcept {
  if (this == &other) return *this;
  delete[] bins_;
  bins_ = std::exchange(other.bins_, nullptr);
  offset_ = std::exchange(other.offset_, 0);
  size_ = std::exchange(other.size_, 0);
  capacity_bytes_ = std::exchange(other.capacity_bytes_, 0);
  width_log2_ = std::exchange(other.width_log2_, 1);
  return *this;
}

DDSketch::Store::~Store() { delete[] bins_; }

uint64_t DDSketch::Store::Get(uint32_t i) const {
  return WithWidth(width_log2_, bins_, [i](auto* c) { return static_cast<uint64_t>(c[i]); });
}

void DDSketch::Store::Set(uint32_t i, uint64_t v) {
  WithWidth(width_log2_, bins_,
            [i, v](auto* c) { c[i] = static_cast<std::remove_reference_t<decltype(*c)>>(v); });
}

void DDSketch::Store::Widen() {
  const uint32_t bytes = std::max<uint32_t>(capacity_bytes_ >> width_log2_, size_)
                         << (width_log2_ + 1);
  unsigned char* wider = AllocateBins(bytes);
  const int new_log2 = width_log2_ + 1;
  for (uint32_t i = 0; i < size_; ++i) {
    const uint64_t v = Get(i);
    WithWidth(new_log2, wider,
              [i, v](auto* c) { c[i] = static_cast<std::remove_reference_t<decltype(*c)>>(v); });
  }
  delete[] bins_;
  bins_ = wider;
  capacity_bytes_ = bytes;
  width_log2_ = static_cast<uint8_t>(new_log2);
}

// Invariant: when non-empty, the first and last bins are non-zero, so equal contents have equal
// representations; the span never exceeds max_bins.
void DDSketch::Store::IncrementSlow(int32_t index, int max_bins) {
  Add(index, 1, max_bins);  // the slow path: a new or out-of-range bin, or a full counter
}

// Makes the store cover [new_lo, new_hi] (new_hi >= current high end); bins below new_lo are
// folded into bin new_lo (collapsing the lowest magnitudes when the range exceeds max_bins).
void DDSketch::Store::Reshape(int32_t new_lo, int32_t new_hi) {
  const auto new_size = static_cast<uint32_t>(static_cast<int64_t>(new_hi) - new_lo + 1);
  const uint32_t old_size = size_;
  const int w = width_log2_;
  uint64_t folded = 0;
  uint32_t drop = 0;   // old bins folded away at the front
  uint32_t front = 0;  // new zero bins at the front
  if (old_size > 0) {
    if (new_lo <= offset_) {
      front = static_cast<uint32_t>(static_cast<int64_t>(offset_) - new_lo);
    } else {
      drop = static_cast<uint32_t>(
          std::min<int64_t>(static_cast<int64_t>(new_lo) - offset_, old_size));
      for (uint32_t i = 0; i < drop; ++i) folded += Get(i);
    }
  }
  const uint32_t kept = old_size - drop;
  const size_t bytes = static_cast<size_t>(new_size) << w;
  unsigned char* dst = bins_;
  if (bytes > capacity_bytes_) {
    // Grow geometrically so a sketch whose range creeps outwards reshapes O(log) times.
    const size_t want = std::max<size_t>(bytes, static_cast<size_t>(capacity_bytes_) * 3 / 2);
    const size_t cap = std::max<size_t>(want, size_t{32});
    dst = AllocateBins(cap);
    capacity_bytes_ = static_cast<uint32_t>(cap);
  }
  if (kept > 0) {
    std::memmove(dst + (static_cast<size_t>(front) << w), bins_ + (static_cast<size_t>(drop) << w),
                 static_cast<size_t>(kept) << w);
  }
  std::memset(dst, 0, static_cast<size_t>(front) << w);
  const uint32_t tail = new_size - front - kept;
  std::memset(dst + (static_cast<size_t>(front + kept) << w), 0, static_cast<size_t>(tail) << w);
  if (dst != bins_) {
    delete[] bins_;
    bins_ = dst;
  }
  offset_ = new_lo;
  size_ = new_size;
  if (folded > 0) {
    const uint64_t c = Get(0);
    while (c + folded > MaxCount()) Widen();
    Set(0, c + folded);
  }
}

void DDSketch::Store::Add(int32_t index, uint64_t n, int max_bins) {
  if (size_ == 0) {
    if (capacity_bytes_ < (1u << width_log2_)) Reshape(index, index);  // reuses capacity
    offset_ = index;
    size_ = 1;
    while (n > MaxCount()) Widen();
    Set(0, n);
    return;
  }
  const int64_t size = size_;
  const int64_t rel = static_cast<int64_t>(index) - offset_;
  auto at = static_cast<uint32_t>(rel);
  if (rel < 0 || rel >= size) {
    const int64_t lo = std::min<int64_t>(offset_, index);
    const int64_t hi = std::max<int64_t>(offset_ + size - 1, index);
    const int64_t new_lo = std::max<int64_t>(lo, hi - max_bins + 1);
    Reshape(static_cast<int32_t>(new_lo), static_cast<int32_t>(hi));
    at = static_cast<uint32_t>(std::max<int64_t>(index, new_lo) - new_lo);
  }
  const uint64_t c = Get(at);
  while (n > MaxCount() - c) Widen();
  Set(at, c + n);
}

void DDSketch::Store::MergeFrom(const Store& other, int max_bins) {
  if (other.size_ == 0) return;
  const int64_t other_lo = other.offset_;
  const int64_t other_hi = other_lo + static_cast<int64_t>(other.size_) - 1;
  int64_t lo = other_lo;
  int64_t hi = other_hi;
  if (size_ > 0) {
    lo = std::min<int64_t>(lo, offset_);
    hi = std::max<int64_t>(hi, offset_ + static_cast<int64_t>(size_) - 1);
  }
  const int64_t new_lo = std::max<int64_t>(lo, hi - max_bins + 1);
  if (size_ == 0 || new_lo != offset_ || hi != offset_ + static_cast<int64_t>(size_) - 1) {
    if (size_ == 0) offset_ = static_cast<int32_t>(new_lo);
    Reshape(static_cast<int32_t>(new_lo), static_cast<int32_t>(hi));
  }
  while (width_log2_ < other.width_log2_) Widen();
  // Bins of `other` below new_lo collapse into the lowest bin.
  uint32_t i = 0;
  const uint32_t n = other.size_;
  uint64_t folded = 0;
  for (; i < n && other_lo + static_cast<int64_t>(i) < new_lo; ++i) folded += other.Get(i);
  if (folded > 0) {
    const uint64_t c = Get(0);
    while (c + folded > MaxCount()) Widen();
    Set(0, c + folded);
  }
  // Other's bin j lands at position j + shift; on a count overflowing the width, widen and resume.
  const int64_t shift = other_lo - new_lo;
  while (i < n) {
    i = WithWidth(width_log2_, bins_, [&](auto* dst) {
      using T = std::remove_reference_t<decltype(*dst)>;
      constexpr uint64_t kMax = std::numeric_limits<T>::max();
      return WithWidth(other.width_log2_, other.bins_, [&](const auto* src) {
        uint32_t j = i;
        for (; j < n; ++j) {
          T& d = dst[j + shift];
          const uint64_t add = src[j];
          if (add > kMax - d) break;
          d = static_cast<T>(d + add);
        }
        return j;
      });
    });
    if (i < n) Widen();
  }
}

bool DDSketch::Store::Append(int64_t index, uint64_t n, int max_bins) {
  if (size_ == 0) {
    offset_ = static_cast<int32_t>(index);
    Reshape(offset_, offset_);
  } else {
    if (index - offset_ + 1 > max_bins) return false;
    Reshape(offset_, static_cast<int32_t>(index));
  }
  while (n > MaxCount()) Widen();
  Set(size_ - 1, n);
  return true;
}

void DDSketch::Store::Clear() {
  // Back to 16-bit counts; the buffer is kept.
  offset_ = 0;
  size_ = 0;
  width_log2_ = 1;
}

bool DDSketch::Store::operator==(const Store& other) const {
  if (size_ != other.size_ || (size_ > 0 && offset_ != other.offset_)) return false;
  for (uint32_t i = 0; i < size_; ++i) {
    if (Get(i) != other.Get(i)) return false;
  }
  return true;
}

Status DDSketch::Merge(const DDSketch& other) {
  if (other.relative_accuracy_ != relative_accuracy_) {
    return Status::InvalidArgument("DDSketch::Merge: relative accuracy differs");
  }
  if (other.count_ == 0) return Status::Ok();
  positive_.MergeFrom(other.positive_, max_bins_);
  negative_.MergeFrom(other.negative_, max_bins_);
  negative_count_ += other.negative_count_;
  zero_count_ += other.zero_count_;
  count_ += other.count_;
  return Status::Ok();
}

// The index of the bin holding the element of 0-based rank `rank` (the first bin whose
// cumulative count exceeds it), scanning from the low end.
int32_t DDSketch::Store::IndexAtRank(double rank) const {
  return WithWidth(width_log2_, bins_, [&](const auto* c) {
    uint64_t cumulative = 0;
    for (uint32_t i = 0; i < size_; ++i) {
      cumulative += c[i];
      if (static_cast<double>(cumulative) > rank) return offset_ + static_cast<int32_t>(i);
    }
    return offset_ + static_cast<int32_t>(size_) - 1;
  });
}

double DDSketch::Quantile(double q) const {
  if (count_ == 0 || !(q >= 0 && q <= 1)) return std::numeric_limits<double>::quiet_NaN();
  const double rank = q * static_cast<double>(count_ - 1);
  const auto negatives = static_cast<double>(negative_count_);
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
  negative_count_ = 0;
  zero_count_ = 0;
  count_ = 0;
}

bool DDSketch::operator==(const DDSketch& other) const {
  return relative_accuracy_ == other.relative_accuracy_ && max_bins_ == other.max_bins_ &&
         zero_count_ == other.zero_count_ && count_ == other.count_ &&
         negative_count_ == other.negative_count_ && positive_ == other.positive_ &&
         negative_ == other.negative_;
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
    for (uint32_t i = 0; i < store->size(); ++i) nonzero += store->Get(i) != 0 ? 1 : 0;
    PutVarint(out, nonzero);
    int64_t prev = 0;
    bool first = true;
    for (uint32_t i = 0; i < store->size(); ++i) {
      const uint64_t c = store->Get(i);
      if (c == 0) continue;
      const int64_t index = static_cast<int64_t>(store->offset()) + static_cast<int64_t>(i);
      PutVarint(out, first ? ZigZag(index) : static_cast<uint64_t>(index - prev));
      PutVarint(out, c);
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
    int64_t index = 0;
    uint64_t total = 0;
    for (uint64_t b = 0; b < bins; ++b) {
      uint64_t raw = 0;
      uint64_t c = 0;
      if (!GetVarint(&p, &raw) || !GetVarint(&p, &c)) return corrupt("truncated bin");
      if (b == 0) {
        index = UnZigZag(raw);
        if (index < min_index || index > max_index) return corrupt("bin index out of range");
      } else {
        if (raw == 0 || raw > static_cast<uint64_t>(max_index - index)) {
          return corrupt("bin indices not increasing or out of range");
        }
        index += static_cast<int64_t>(raw);
      }
      if (c == 0) return corrupt("empty bin");
      if (total + c < total || count + c < count) return corrupt("count overflow");
      if (!store->Append(index, c, static_cast<int>(max_bins))) {
        return corrupt("bins span more than max_bins");
      }
      total += c;
      count += c;
    }
    if (store == &sketch.negative_) sketch.negative_count_ = total;
  }
  sketch.zero_count_ = zero_count;
  sketch.count_ = count;
  *out = std::move(sketch);
  *in = p;
  return Status::Ok();
}

}  // namespace inferscope
