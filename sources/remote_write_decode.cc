#include "sources/remote_write_decode.h"

#include <snappy.h>

#include <cstring>

namespace inferscope {
namespace {

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLen = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5
};

// A bounds-checked protobuf reader over one message's bytes.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : p_(bytes.data()), end_(bytes.data() + bytes.size()) {}
  bool done() const { return p_ == end_; }

  bool Varint(uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return false;
      const auto b = static_cast<uint8_t>(*p_++);
      if (shift == 63 && b > 1) return false;  // beyond 64 bits
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        *out = v;
        return true;
      }
    }
    return false;
  }
  bool Tag(uint32_t* field, uint32_t* wire) {
    uint64_t tag = 0;
    if (!Varint(&tag)) return false;
    *field = static_cast<uint32_t>(tag >> 3);
    *wire = static_cast<uint32_t>(tag & 7);
    return *field != 0 && (tag >> 3) <= 0x1fffffff;
  }
  bool Len(std::string_view* out) {
    uint64_t n = 0;
    if (!Varint(&n)) return false;
    if (n > static_cast<uint64_t>(end_ - p_)) return false;
    *out = std::string_view(p_, static_cast<size_t>(n));
    p_ += n;
    return true;
  }
  bool Fixed64(uint64_t* out) {
    if (end_ - p_ < 8) return false;
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p_[i]);
    p_ += 8;
    *out = v;
    return true;
  }
  bool Skip(uint32_t wire) {
    switch (wire) {
      case kVarint: {
        uint64_t v = 0;
        return Varint(&v);
      }
      case kFixed64:
        if (end_ - p_ < 8) return false;
        p_ += 8;
        return true;
      case kLen: {
        std::string_view v;
        return Len(&v);
      }
      case kFixed32:
        if (end_ - p_ < 4) return false;
        p_ += 4;
        return true;
      default:  // groups (deprecated, never in remote write) and 6/7
        return false;
    }
  }

 private:
  const char* p_;
  const char* end_;
};

RwError Fail(RwError e, std::string* reason, const char* what) {
  if (reason != nullptr) *reason = what;
  return e;
}

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void PutLen(std::string& out, uint32_t field, std::string_view bytes) {
  PutVarint(out, (static_cast<uint64_t>(field) << 3) | kLen);
  PutVarint(out, bytes.size());
  out.append(bytes);
}

}  // namespace

std::string_view RwSeries::Label(std::string_view name) const {
  for (const RwLabel& l : labels) {
    if (l.name == name) return l.value;
  }
  return {};
}

std::string_view RwErrorName(RwError error) {
  switch (error) {
    case RwError::kNone:
      return "none";
    case RwError::kBadSnappy:
      return "bad_snappy";
    case RwError::kTooLarge:
      return "too_large";
    case RwError::kBadProtobuf:
      return "bad_protobuf";
    case RwError::kTooMany:
      return "too_many";
    case RwError::kCount_:
      break;
  }
  return "bad_protobuf";
}

RwError RemoteWriteDecoder::DecodeSnappy(std::string_view body, std::string* reason) {
  size_t n = 0;
  if (!snappy::GetUncompressedLength(body.data(), body.size(), &n)) {
    series_.clear();
    return Fail(RwError::kBadSnappy, reason, "not a snappy block (bad length header)");
  }
  if (n > limits_.max_decoded_bytes) {
    series_.clear();
    return Fail(RwError::kTooLarge, reason, "uncompressed payload beyond the limit");
  }
  // Validated before the buffer is sized: a few corrupt bytes announcing a large payload cost no
  // allocation.
  if (!snappy::IsValidCompressedBuffer(body.data(), body.size())) {
    series_.clear();
    return Fail(RwError::kBadSnappy, reason, "corrupt snappy block");
  }
  buffer_.resize(n);
  if (!snappy::RawUncompress(body.data(), body.size(), buffer_.data())) {
    series_.clear();
    return Fail(RwError::kBadSnappy, reason, "corrupt snappy block");
  }
  return Decode(buffer_, reason);
}

RwError RemoteWriteDecoder::DecodeSeries(std::string_view msg, std::string* reason) {
  Reader r(msg);
  Range range{};
  range.label_begin = static_cast<uint32_t>(labels_.size());
  range.sample_begin = static_cast<uint32_t>(samples_.size());
  size_t labels = 0;
  while (!r.done()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    if (!r.Tag(&field, &wire)) return Fail(RwError::kBadProtobuf, reason, "TimeSeries: bad tag");
    if (field == 1 || field == 2) {
      if (wire != kLen) {
        return Fail(RwError::kBadProtobuf, reason,
                    "TimeSeries: labels/samples not length-delimited");
      }
      std::string_view sub;
      if (!r.Len(&sub)) return Fail(RwError::kBadProtobuf, reason, "TimeSeries: truncated");
      Reader s(sub);
      if (field == 1) {
        if (++labels > limits_.max_labels) {
          return Fail(RwError::kTooMany, reason, "TimeSeries: too many labels");
        }
        RwLabel label;
        while (!s.done()) {
          uint32_t f = 0;
          uint32_t w = 0;
          if (!s.Tag(&f, &w)) return Fail(RwError::kBadProtobuf, reason, "Label: bad tag");
          if (f == 1 || f == 2) {
            if (w != kLen)
              return Fail(RwError::kBadProtobuf, reason, "Label: name/value not a string");
            if (!s.Len(f == 1 ? &label.name : &label.value)) {
              return Fail(RwError::kBadProtobuf, reason, "Label: truncated");
            }
          } else if (!s.Skip(w)) {
            return Fail(RwError::kBadProtobuf, reason, "Label: bad field");
          }
        }
        labels_.push_back(label);
      } else {
        if (samples_.size() >= limits_.max_samples) {
          return Fail(RwError::kTooMany, reason, "WriteRequest: too many samples");
        }
        RwSample sample;
        while (!s.done()) {
          uint32_t f = 0;
          uint32_t w = 0;
          if (!s.Tag(&f, &w)) return Fail(RwError::kBadProtobuf, reason, "Sample: bad tag");
          if (f == 1) {
            uint64_t bits = 0;
            if (w != kFixed64 || !s.Fixed64(&bits)) {
              return Fail(RwError::kBadProtobuf, reason, "Sample: value not a double");
            }
            std::memcpy(&sample.value, &bits, sizeof(bits));
          } else if (f == 2) {
            uint64_t v = 0;
            if (w != kVarint || !s.Varint(&v)) {
              return Fail(RwError::kBadProtobuf, reason, "Sample: timestamp not a varint");
            }
            sample.timestamp_ms = static_cast<int64_t>(v);
          } else if (!s.Skip(w)) {
            return Fail(RwError::kBadProtobuf, reason, "Sample: bad field");
          }
        }
        samples_.push_back(sample);
      }
    } else {
      if (field == 3) ++stats_.exemplars;
      if (field == 4) ++stats_.histograms;
      if (!r.Skip(wire)) return Fail(RwError::kBadProtobuf, reason, "TimeSeries: bad field");
    }
  }
  range.label_end = static_cast<uint32_t>(labels_.size());
  range.sample_end = static_cast<uint32_t>(samples_.size());
  ranges_.push_back(range);
  return RwError::kNone;
}

RwError RemoteWriteDecoder::Decode(std::string_view proto, std::string* reason) {
  labels_.clear();
  samples_.clear();
  ranges_.clear();
  series_.clear();
  stats_ = {};
  if (proto.size() > limits_.max_decoded_bytes) {
    return Fail(RwError::kTooLarge, reason, "payload beyond the limit");
  }
  Reader r(proto);
  while (!r.done()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    if (!r.Tag(&field, &wire)) return Fail(RwError::kBadProtobuf, reason, "WriteRequest: bad tag");
    if (field == 1) {
      if (wire != kLen) {
        return Fail(RwError::kBadProtobuf, reason, "WriteRequest: timeseries not length-delimited");
      }
      std::string_view msg;
      if (!r.Len(&msg)) return Fail(RwError::kBadProtobuf, reason, "WriteRequest: truncated");
      if (ranges_.size() >= limits_.max_series) {
        return Fail(RwError::kTooMany, reason, "WriteRequest: too many series");
      }
      RwError e = DecodeSeries(msg, reason);
      if (e != RwError::kNone) {
        ranges_.clear();
        return e;
      }
    } else {
      if (field == 3) ++stats_.metadata;
      if (!r.Skip(wire)) return Fail(RwError::kBadProtobuf, reason, "WriteRequest: bad field");
    }
  }
  // Spans only once the tables stopped growing.
  series_.reserve(ranges_.size());
  for (const Range& g : ranges_) {
    series_.push_back(RwSeries{
        std::span<const RwLabel>(labels_.data() + g.label_begin, g.label_end - g.label_begin),
        std::span<const RwSample>(samples_.data() + g.sample_begin,
                                  g.sample_end - g.sample_begin)});
  }
  stats_.series = series_.size();
  stats_.samples = samples_.size();
  return RwError::kNone;
}

std::string EncodeWriteRequest(std::span<const RwSeriesInput> series) {
  std::string out;
  std::string ts;
  std::string sub;
  for (const RwSeriesInput& s : series) {
    ts.clear();
    for (const auto& [name, value] : s.labels) {
      sub.clear();
      PutLen(sub, 1, name);
      PutLen(sub, 2, value);
      PutLen(ts, 1, sub);
    }
    for (const RwSample& sample : s.samples) {
      sub.clear();
      PutVarint(sub, (1u << 3) | kFixed64);
      uint64_t bits = 0;
      std::memcpy(&bits, &sample.value, sizeof(bits));
      for (int i = 0; i < 8; ++i) sub.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
      PutVarint(sub, (2u << 3) | kVarint);
      PutVarint(sub, static_cast<uint64_t>(sample.timestamp_ms));
      PutLen(ts, 2, sub);
    }
    PutLen(out, 1, ts);
  }
  return out;
}

std::string SnappyCompress(std::string_view raw) {
  std::string out;
  snappy::Compress(raw.data(), raw.size(), &out);
  return out;
}

}  // namespace inferscope
