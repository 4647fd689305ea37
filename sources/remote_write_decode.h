#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace inferscope {

// The Prometheus remote-write 1.0 payload (`prometheus.WriteRequest`, snappy block format), decoded
// by hand: only the messages the receiver needs, every other field skipped by its wire type.
//
//   WriteRequest { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3; }
//   TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2;
//                  repeated Exemplar exemplars = 3; repeated Histogram histograms = 4; }
//   Label        { string name = 1; string value = 2; }
//   Sample       { double value = 1; int64 timestamp = 2; }   // timestamp: ms since the epoch
//
// Native histograms (field 4), exemplars and metadata are skipped (counted in the stats).

struct RwLabel {
  std::string_view name;
  std::string_view value;
};

struct RwSample {
  double value = 0;
  int64_t timestamp_ms = 0;
};

struct RwSeries {
  std::span<const RwLabel> labels;
  std::span<const RwSample> samples;

  // The value of label `name`, or "" when absent.
  std::string_view Label(std::string_view name) const;
};

// Why a payload was refused.
enum class RwError : uint8_t {
  kNone = 0,
  kBadSnappy,    // not a snappy block, or corrupt
  kTooLarge,     // compressed or uncompressed size beyond the limit
  kBadProtobuf,  // truncated, wrong wire type for a known field, bad varint, group wire types
  kTooMany,      // more series, labels per series or samples than the limits
  kCount_,
};
std::string_view RwErrorName(RwError error);

struct RwLimits {
  size_t max_decoded_bytes = 64 << 20;  // uncompressed WriteRequest
  size_t max_series = 1'000'000;        // per request
  size_t max_labels = 128;              // per series
  size_t max_samples = 10'000'000;      // per request, all series
};

struct RwDecodeStats {
  uint64_t series = 0;
  uint64_t samples = 0;
  uint64_t histograms = 0;  // native histograms skipped
  uint64_t exemplars = 0;   // exemplars skipped
  uint64_t metadata = 0;    // metadata entries skipped
};

// RemoteWriteDecoder decodes one request at a time into tables it keeps between requests: the
// series' labels are views into the uncompressed buffer (zero copy); after the first requests of a
// given size nothing is allocated. Any bytes are accepted: a malformed payload is an error with a
// reason, never a crash, never an unbounded allocation (sizes are checked against the limits before
// anything is reserved).
// Concurrency: one thread at a time; the views are valid until the next call.
class RemoteWriteDecoder {
 public:
  explicit RemoteWriteDecoder(RwLimits limits = {}) : limits_(limits) {}

  // Uncompresses a snappy block (`Content-Encoding: snappy`) and decodes it.
  RwError DecodeSnappy(std::string_view body, std::string* reason);
  // Decodes an uncompressed WriteRequest (the fuzz target and tests use it directly). `proto` must
  // stay alive while series() are used.
  RwError Decode(std::string_view proto, std::string* reason);

  std::span<const RwSeries> series() const { return series_; }
  const RwDecodeStats& stats() const { return stats_; }
  const RwLimits& limits() const { return limits_; }

 private:
  RwError DecodeSeries(std::string_view msg, std::string* reason);

  RwLimits limits_;
  std::string buffer_;  // the uncompressed payload
  std::vector<RwLabel> labels_;
  std::vector<RwSample> samples_;
  struct Range {
    uint32_t label_begin, label_end, sample_begin, sample_end;
  };
  std::vector<Range> ranges_;
  std::vector<RwSeries> series_;
  RwDecodeStats stats_;
};

// Encodes a WriteRequest (tests, the fuzz seed corpus, benchmarks): the exact wire format
// Prometheus sends, uncompressed.
struct RwSeriesInput {
  std::vector<std::pair<std::string, std::string>> labels;
  std::vector<RwSample> samples;
};
std::string EncodeWriteRequest(std::span<const RwSeriesInput> series);
// Snappy block compression of `raw`.
std::string SnappyCompress(std::string_view raw);

}  // namespace inferscope
