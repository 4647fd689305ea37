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

DDSketch::Params DDSketch::MakeParams(double relative_accuracy, int max_bins) {
  if (!(relative_accuracy >= kMinRelativeAccuracy)) relative_accuracy = kMinRelativeAccuracy;
  if (relative_accuracy > kMaxRelativeAccuracy) relative_accuracy = kMaxRelativeAccuracy;
  Params p;
  p.relative_accuracy = relative_accuracy;
  p.max_bins = std::clamp(max_bins, 1, kMaxMaxBins);
  p.gamma = (1 + relative_accuracy) / (1 - relative_accuracy);
  p.log_gamma_inverse = 1 / std::log(p.gamma);
  // Smallest magnitude whose bin index and representative value stay normal doubles.
  p.min_indexable = DBL_MIN * p.gamma;
  return p;
}

const DDSketch::Params DDSketch::kDefaultParams =
    DDSketch::MakeParams(kDefaultRelativeAccuracy, kDefaultMaxBins);

DDSketch::ParamsPtr DDSketch::ShareOrCopy(const Params& p) {
  if (p.relative_accuracy == kDefaultParams.relative_accuracy &&
      p.max_bins == kDefaultParams.max_bins) {
    return ParamsPtr(&kDefaultParams);
  }
  return ParamsPtr(new Params(p));
}

DDSketch::DDSketch(double relative_accuracy, int max_bins)
    : params_(ShareOrCopy(MakeParams(relative_accuracy, max_bins))) {}

DDSketch::DDSketch(const DDSketch& other)
    : count_(other.count_),
      params_(ShareOrCopy(*other.params_)),
      positive_(other.positive_),
      negative_(other.negative_ != nullptr ? std::make_unique<Negatives>(*other.negative_)
                                           : nullptr) {}

DDSketch::DDSketch(DDSketch&& other) noexcept
    : count_(std::exchange(other.count_, 0)),
      params_(std::move(other.params_)),
      positive_(std::move(other.positive_)),
      negative_(std::move(other.negative_)) {
  other.params_.reset(&kDefaultParams);
}

DDSketch& DDSketch::operator=(DDSketch&& other) noexcept {
  if (this == &other) return *this;
  count_ = std::exchange(other.count_, 0);
  params_ = std::move(other.params_);
  other.params_.reset(&kDefaultParams);
  positive_ = std::move(other.positive_);
  negative_ = std::move(other.negative_);
  return *this;
}

DDSketch& DDSketch::operator=(const DDSketch& other) {
  if (this == &other) return *this;
  count_ = other.count_;
  if (params_.get() != other.params_.get()) params_ = ShareOrCopy(*other.params_);
  positive_ = other.positive_;
  if (other.negative_ == nullptr) {
    if (negative_ != nullptr) {
      negative_->store.Clear();
      negative_->count = 0;
    }
  } else {
    negatives() = *other.negative_;
  }
  return *this;
}

// Bin i holds magnitudes in (gamma^(i-1), gamma^i]. |x| stays below 2^29 (see
// kMinRelativeAccuracy), so the integer ceiling below is exact.
int32_t DDSketch::Index(double magnitude) const {
  const double x = std::log(magnitude) * params_->log_gamma_inverse;
  const auto truncated = static_cast<int32_t>(x);
  return truncated + (x > truncated ? 1 : 0);
}

// The representative 2 gamma^i / (gamma + 1) is within relative_accuracy of both ends of bin i.
double DDSketch::Value(int32_t index) const {
  const double gamma = params_->gamma;
  double v = std::pow(gamma, index) * (2 / (gamma + 1));
  return std::min(v, DBL_MAX);
}

void DDSketch::Add(double value) {
  const Params& p = *params_;
  if (value > p.min_indexable) {
    if (value > DBL_MAX) return;
    positive_.Increment(Index(value), p.max_bins);
  } else if (value < -p.min_indexable) {
    if (value < -DBL_MAX) return;
    Negatives& neg = negatives();
    neg.store.Increment(Index(-value), p.max_bins);
    ++neg.count;
  } else if (value != value) {
    return;  // NaN
  }
  // Zeros are implied: count_ minus the bins (zero_count()).
  ++count_;
}

void DDSketch::AddUniform(double lo, double hi, uint64_t n) {
  n = std::min(n, kMaxCount - std::min(count_, kMaxCount));
  if (n == 0 || !std::isfinite(lo) || !std::isfinite(hi) || hi < lo) return;
  lo = std::max(lo, 0.0);
  const Params& p = *params_;
  const int max_bins = p.max_bins;
  if (hi <= p.min_indexable) {
    count_ += n;  // zeros
    return;
  }
  if (lo == hi) {  // a point mass
    positive_.Add(Index(hi), n, max_bins);
    count_ += n;
    return;
  }
  const double width = hi - lo;
  const auto total = static_cast<double>(n);
  uint64_t assigned = 0;
  // Bin i holds (gamma^(i-1), gamma^i]; walk down from the bin of `hi`.
  int32_t i = Index(hi);
  const double gamma = p.gamma;
  double lower = std::pow(gamma, i - 1);
  // At most max_bins bins are distinct (lower ones collapse anyway); the walk ends earlier when
  // the interval's low end is reached or every count is placed.
  for (int steps = 0; assigned < n; ++steps, --i, lower /= gamma) {
    const bool last = lower <= lo || lower <= p.min_indexable || steps + 1 >= max_bins;
    uint64_t target = n;
    if (!last) {
      const double covered = (hi - lower) / width;  // share of the interval above `lower`
      target = std::min<uint64_t>(n, static_cast<uint64_t>(std::llround(covered * total)));
    }
    if (target > assigned) {
      positive_.Add(i, target - assigned, max_bins);
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
  if (!(value > params_->min_indexable && value <= DBL_MAX)) return;
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const auto exponent = static_cast<int32_t>(bits >> 52) - 1023;
  const uint64_t mantissa_bits = (bits & ((uint64_t{1} << 52) - 1)) | 0x3FF0000000000000ULL;
  double mantissa;
  std::memcpy(&mantissa, &mantissa_bits, sizeof(mantissa));
  const double f = mantissa - 1;  // [0, 1)
  const double log2 = exponent + f * (1.3466 - 0.3466 * f);
  positive_.PrefetchIndex(static_cast<int32_t>(log2 * (M_LN2 * params_->log_gamma_inverse)) + 1);
}

namespace {

// Heap buffer sizes of the capacity classes (class 0 is the 8 inline bytes): 24 bytes, then about
// 1.5x each step, each a size glibc's malloc serves without slack (16 k + 8 usable bytes), up to
// the 8 MiB that 2^20 bins of 64-bit counts need.
struct CapacityTable {
  static constexpr int kClasses = 40;
  uint32_t bytes[kClasses] = {};
  constexpr CapacityTable() {
    bytes[0] = 8;
    bytes[1] = 24;
    for (int i = 2; i < kClasses; ++i) {
      const uint64_t want = uint64_t{bytes[i - 1]} * 3 / 2;
      const uint64_t rounded = (want + 7) / 16 * 16 + 8;  // 16 k + 8 >= want
      bytes[i] = static_cast<uint32_t>(std::min<uint64_t>(rounded, uint64_t{1} << 31));
    }
  }
};
constexpr CapacityTable kCapacity;
static_assert(kCapacity.bytes[CapacityTable::kClasses - 1] >= (8u << 20) + 8,
              "the largest class must hold 2^20 64-bit counts");

// The smallest class of at least `bytes` bytes.
uint32_t ClassFor(size_t bytes) {
  uint32_t c = 0;
  while (kCapacity.bytes[c] < bytes) ++c;
  return c;
}

// Calls f(T*) with the counts viewed as T = uint8_t, uint16_t, uint32_t or uint64_t.
template <typename F>
decltype(auto) WithWidth(int width_log2, unsigned char* bins, F&& f) {
  switch (width_log2) {
    case 0:
      return f(reinterpret_cast<uint8_t*>(bins));
    case 1:
      return f(reinterpret_cast<uint16_t*>(bins));
    case 2:
      return f(reinterpret_cast<uint32_t*>(bins));
    default:
      return f(reinterpret_cast<uint64_t*>(bins));
  }
}
template <typename F>
decltype(auto) WithWidth(int width_log2, const unsigned char* bins, F&& f) {
  switch (width_log2) {
    case 0:
      return f(reinterpret_cast<const uint8_t*>(bins));
    case 1:
      return f(reinterpret_cast<const uint16_t*>(bins));
    case 2:
      return f(reinterpret_cast<const uint32_t*>(bins));
    default:
      return f(reinterpret_cast<const uint64_t*>(bins));
  }
}

}  // namespace

uint32_t DDSketch::Store::capacity_bytes() const { return kCapacity.bytes[capacity_class_]; }

size_t DDSketch::Store::HeapBytes() const {
  return capacity_class_ == 0 ? 0 : kCapacity.bytes[capacity_class_];
}

void DDSketch::Store::Reallocate(size_t bytes) {
  const uint32_t c = ClassFor(bytes);
  if (capacity_class_ != 0) delete[] heap_;
  if (c == 0) {
    std::memset(inline_, 0, sizeof inline_);
  } else {
    // new of unsigned char[] creates the uint16/32/64 count arrays implicitly (C++20) and aligns
    // them to at least 16 bytes.
    heap_ = new unsigned char[kCapacity.bytes[c]];
  }
  capacity_class_ = c;
}

DDSketch::Store::Store(const Store& other)
    : offset_(other.offset_), size_(other.size_), width_log2_(other.width_log2_) {
  const size_t bytes = static_cast<size_t>(other.size_) << other.width_log2_;
  const uint32_t c = ClassFor(bytes);
  if (c != 0) heap_ = new unsigned char[kCapacity.bytes[c]];
  capacity_class_ = c;
  if (bytes > 0) std::memcpy(data(), other.data(), bytes);
}

DDSketch::Store::Store(Store&& other) noexcept
    : offset_(other.offset_),
      size_(other.size_),
      width_log2_(other.width_log2_),
      capacity_class_(other.capacity_class_) {
  std::memcpy(inline_, other.inline_, sizeof inline_);  // the pointer or the inline counts
  other.capacity_class_ = 0;
  std::memset(other.inline_, 0, sizeof other.inline_);
  other.offset_ = 0;
  other.size_ = 0;
  other.width_log2_ = 0;
}

DDSketch::Store& DDSketch::Store::operator=(const Store& other) {
  if (this == &other) return *this;
  const size_t bytes = static_cast<size_t>(other.size_) << other.width_log2_;
  if (bytes > capacity_bytes()) Reallocate(bytes);
  if (bytes > 0) std::memcpy(data(), other.data(), bytes);
  offset_ = other.offset_;
  size_ = other.size_;
  width_log2_ = other.width_log2_;
  return *this;
}

DDSketch::Store& DDSketch::Store::operator=(Store&& other) noexcept {
  if (this == &other) return *this;
  if (capacity_class_ != 0) delete[] heap_;
  std::memcpy(inline_, other.inline_, sizeof inline_);
  offset_ = other.offset_;
  size_ = other.size_;
  width_log2_ = other.width_log2_;
  capacity_class_ = other.capacity_class_;
  other.capacity_class_ = 0;
  std::memset(other.inline_, 0, sizeof other.inline_);
  other.offset_ = 0;
  other.size_ = 0;
  other.width_log2_ = 0;
  return *this;
}

DDSketch::Store::~Store() {
  if (capacity_class_ != 0) delete[] heap_;
}

uint64_t DDSketch::Store::Get(uint32_t i) const {
  return WithWidth(width_log2_, data(), [i](const auto* c) { return static_cast<uint64_t>(c[i]); });
}

uint64_t DDSketch::Store::Total() const {
  return WithWidth(width_log2_, data(), [this](const auto* c) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < size_; ++i) total += c[i];
    return total;
  });
}

void DDSketch::Store::Set(uint32_t i, uint64_t v) {
  WithWidth(width_log2_, data(),
            [i, v](auto* c) { c[i] = static_cast<std::remove_reference_t<decltype(*c)>>(v); });
}

void DDSketch::Store::Widen() {
  const uint32_t size = size_;
  const int old_log2 = width_log2_;
  const int new_log2 = old_log2 + 1;
  if (capacity_class_ != 0 && (static_cast<size_t>(size) << new_log2) <= capacity_bytes()) {
    // The heap buffer holds the wider counts (Clear keeps a buffer sized for wide counts and
    // resets the width): widen in place, last bin first — wider bin i only overwrites narrow bins
    // >= i, which are already moved.
    unsigned char* bins = data();
    for (uint32_t i = size; i-- > 0;) {
      const uint64_t v = Get(i);
      WithWidth(new_log2, bins,
                [i, v](auto* w) { w[i] = static_cast<std::remove_reference_t<decltype(*w)>>(v); });
    }
    width_log2_ = static_cast<uint32_t>(new_log2);
    return;
  }
  // Keep room for as many bins as before (the buffer is too small for `size` wider counts, so
  // this is at most twice the live bins: repeated Clear/Widen cycles cannot grow it without
  // bound).
  const size_t bytes = std::max<size_t>(capacity_bytes() >> old_log2, size) << new_log2;
  // Twice the bytes of the current buffer (at least 16): always a heap buffer.
  const uint32_t c = ClassFor(bytes);
  unsigned char* wider = new unsigned char[kCapacity.bytes[c]];
  for (uint32_t i = 0; i < size; ++i) {
    const uint64_t v = Get(i);
    WithWidth(new_log2, wider,
              [i, v](auto* w) { w[i] = static_cast<std::remove_reference_t<decltype(*w)>>(v); });
  }
  if (capacity_class_ != 0) delete[] heap_;
  heap_ = wider;
  capacity_class_ = c;
  width_log2_ = static_cast<uint32_t>(new_log2);
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
  unsigned char* src = data();
  unsigned char* dst = src;
  unsigned char* old_heap = nullptr;  // freed once the bins are moved out
  uint64_t saved = 0;                 // inline counts, moved through a copy
  if (bytes > capacity_bytes()) {
    // The next classes are ~1.5x apart, so a sketch whose range creeps outwards reshapes O(log)
    // times.
    const uint32_t c = ClassFor(bytes);
    if (capacity_class_ == 0) {
      std::memcpy(&saved, inline_, sizeof saved);
      src = reinterpret_cast<unsigned char*>(&saved);
    } else {
      old_heap = heap_;
    }
    heap_ = new unsigned char[kCapacity.bytes[c]];
    capacity_class_ = c;
    dst = heap_;
  }
  if (kept > 0) {
    std::memmove(dst + (static_cast<size_t>(front) << w), src + (static_cast<size_t>(drop) << w),
                 static_cast<size_t>(kept) << w);
  }
  std::memset(dst, 0, static_cast<size_t>(front) << w);
  const uint32_t tail = new_size - front - kept;
  std::memset(dst + (static_cast<size_t>(front + kept) << w), 0, static_cast<size_t>(tail) << w);
  delete[] old_heap;
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
    width_log2_ = 0;
    offset_ = index;
    size_ = 1;
    Set(0, 0);  // capacity is at least 8 bytes
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
    i = WithWidth(width_log2_, data(), [&](auto* dst) {
      using T = std::remove_reference_t<decltype(*dst)>;
      constexpr uint64_t kMax = std::numeric_limits<T>::max();
      return WithWidth(other.width_log2_, other.data(), [&](const auto* src) {
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
  // Back to 8-bit counts; the buffer is kept.
  offset_ = 0;
  size_ = 0;
  width_log2_ = 0;
}

bool DDSketch::Store::operator==(const Store& other) const {
  if (size_ != other.size_ || (size_ > 0 && offset_ != other.offset_)) return false;
  for (uint32_t i = 0; i < size_; ++i) {
    if (Get(i) != other.Get(i)) return false;
  }
  return true;
}

Status DDSketch::Merge(const DDSketch& other) {
  if (other.params_->relative_accuracy != params_->relative_accuracy) {
    return Status::InvalidArgument("DDSketch::Merge: relative accuracy differs");
  }
  if (other.count_ == 0) return Status::Ok();
  if (other.count_ > kMaxCount - std::min(count_, kMaxCount)) {
    return Status::InvalidArgument("DDSketch::Merge: the count would pass 2^62");
  }
  const int max_bins = params_->max_bins;
  positive_.MergeFrom(other.positive_, max_bins);
  if (other.negative_ != nullptr && other.negative_->count > 0) {
    Negatives& neg = negatives();
    neg.store.MergeFrom(other.negative_->store, max_bins);
    neg.count += other.negative_->count;
  }
  count_ += other.count_;  // with the other's zeros
  return Status::Ok();
}

// The index of the bin holding the element of 0-based rank `rank` (the first bin whose
// cumulative count exceeds it), scanning from the low end.
int32_t DDSketch::Store::IndexAtRank(double rank) const {
  return WithWidth(width_log2_, data(), [&](const auto* c) {
    uint64_t cumulative = 0;
    for (uint32_t i = 0; i < size_; ++i) {
      cumulative += c[i];
      if (static_cast<double>(cumulative) > rank) return offset_ + static_cast<int32_t>(i);
    }
    return offset_ + static_cast<int32_t>(size_) - 1;
  });
}

bool DDSketch::Store::IndexFromTop(double from_top, int32_t* index) const {
  return WithWidth(width_log2_, data(), [&](const auto* c) {
    uint64_t cumulative = 0;
    for (uint32_t i = size_; i-- > 0;) {
      cumulative += c[i];
      if (static_cast<double>(cumulative) >= from_top) {
        *index = offset_ + static_cast<int32_t>(i);
        return true;
      }
    }
    return false;
  });
}

double DDSketch::Quantile(double q) const {
  if (count_ == 0 || !(q >= 0 && q <= 1)) return std::numeric_limits<double>::quiet_NaN();
  const double rank = q * static_cast<double>(count_ - 1);
  const auto negatives = static_cast<double>(negative_ != nullptr ? negative_->count : 0);
  if (rank < negatives) {
    // Negative values in increasing order are magnitudes in decreasing order.
    return -Value(negative_->store.IndexAtRank(negatives - 1 - rank));
  }
  // The zero count is implied, so the positives are scanned from the top: the element of rank r
  // is in the highest bin whose count with the bins above reaches count - r; none: it is a zero.
  int32_t index = 0;
  if (positive_.IndexFromTop(static_cast<double>(count_) - rank, &index)) return Value(index);
  return 0;
}

void DDSketch::Clear() {
  positive_.Clear();
  if (negative_ != nullptr) {
    negative_->store.Clear();
    negative_->count = 0;
  }
  count_ = 0;
}

bool DDSketch::operator==(const DDSketch& other) const {
  const uint64_t neg = negative_ != nullptr ? negative_->count : 0;
  const uint64_t other_neg = other.negative_ != nullptr ? other.negative_->count : 0;
  if (params_->relative_accuracy != other.params_->relative_accuracy ||
      params_->max_bins != other.params_->max_bins || count_ != other.count_ || neg != other_neg ||
      !(positive_ == other.positive_)) {
    return false;
  }
  // Equal counts, negatives and positive bins: equal zeros too.
  if (neg == 0) return true;
  return negative_->store == other.negative_->store;
}

size_t DDSketch::HeapBytes() const {
  size_t bytes = positive_.HeapBytes();
  if (negative_ != nullptr) bytes += sizeof(Negatives) + negative_->store.HeapBytes();
  if (params_.get() != &kDefaultParams) bytes += sizeof(Params);
  return bytes;
}

// Format (version 1):
//   u8 version | f64 relative_accuracy | varint max_bins | varint zero_count |
//   positive store | negative store
// A store is: varint non-zero bins, then per bin varint index (zigzag of the first index, then the
// gap to the previous one) and varint count.
void DDSketch::EncodeTo(std::string* out) const {
  out->push_back(static_cast<char>(kFormatVersion));
  PutDouble(out, params_->relative_accuracy);
  PutVarint(out, static_cast<uint64_t>(params_->max_bins));
  PutVarint(out, zero_count());
  static const Store kEmpty{};
  for (const Store* store : {&positive_, negative_ != nullptr ? &negative_->store : &kEmpty}) {
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
  const int64_t min_index = sketch.Index(sketch.params_->min_indexable);
  const int64_t max_index = sketch.Index(DBL_MAX);
  if (zero_count > kMaxCount) return corrupt("count overflow");
  uint64_t count = zero_count;
  for (const bool negative : {false, true}) {
    uint64_t bins = 0;
    if (!GetVarint(&p, &bins)) return corrupt("truncated bin count");
    if (bins > max_bins || bins > p.size() / 2) return corrupt("too many bins");
    if (bins == 0) continue;
    Store* store = negative ? &sketch.negatives().store : &sketch.positive_;
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
      if (c > kMaxCount - count) return corrupt("count overflow");
      if (!store->Append(index, c, static_cast<int>(max_bins))) {
        return corrupt("bins span more than max_bins");
      }
      total += c;
      count += c;
    }
    if (negative) sketch.negative_->count = total;
  }
  sketch.count_ = count;  // the zeros are implied
  *out = std::move(sketch);
  *in = p;
  return Status::Ok();
}

}  // namespace inferscope
