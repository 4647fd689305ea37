// libFuzzer target: the Prometheus remote-write decoder (sources/remote_write_decode.h).
//
// The input is decoded twice: as an uncompressed WriteRequest (the protobuf walk) and as a snappy
// block (the receiver's path), each with the default limits and with tight ones (3 series, 2
// labels per series, 4 samples, 256 bytes). Any bytes must be refused with a reason or decoded
// without a crash or a hang; every label view must point into the decoded bytes; the limits must
// hold; re-encoding what was decoded and decoding it again must give the same series.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "sources/remote_write_decode.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "remote_write_fuzzer: contract violated: %s\n", what);
  std::abort();
}

bool Inside(std::string_view buf, std::string_view v) {
  return v.empty() || (v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size());
}

void Check(const inferscope::RemoteWriteDecoder& d, std::string_view proto, bool views_in_proto) {
  const inferscope::RwLimits& l = d.limits();
  if (d.series().size() > l.max_series) Fail("more series than max_series");
  size_t samples = 0;
  for (const inferscope::RwSeries& s : d.series()) {
    if (s.labels.size() > l.max_labels) Fail("more labels than max_labels");
    samples += s.samples.size();
    for (const inferscope::RwLabel& label : s.labels) {
      if (views_in_proto && (!Inside(proto, label.name) || !Inside(proto, label.value))) {
        Fail("label view outside the payload");
      }
    }
  }
  if (samples > l.max_samples) Fail("more samples than max_samples");
  if (samples != d.stats().samples || d.series().size() != d.stats().series) Fail("stats");
}

void RoundTrip(const inferscope::RemoteWriteDecoder& d) {
  std::vector<inferscope::RwSeriesInput> in;
  for (const inferscope::RwSeries& s : d.series()) {
    inferscope::RwSeriesInput& i = in.emplace_back();
    for (const inferscope::RwLabel& l : s.labels) i.labels.emplace_back(l.name, l.value);
    i.samples.assign(s.samples.begin(), s.samples.end());
  }
  const std::string again = inferscope::EncodeWriteRequest(in);
  inferscope::RemoteWriteDecoder d2;
  std::string reason;
  if (d2.Decode(again, &reason) != inferscope::RwError::kNone) Fail("re-encoded payload refused");
  if (d2.series().size() != in.size()) Fail("round trip: series count");
  for (size_t i = 0; i < in.size(); ++i) {
    const inferscope::RwSeries& s = d2.series()[i];
    if (s.labels.size() != in[i].labels.size() || s.samples.size() != in[i].samples.size()) {
      Fail("round trip: sizes");
    }
    for (size_t k = 0; k < s.labels.size(); ++k) {
      if (s.labels[k].name != in[i].labels[k].first ||
          s.labels[k].value != in[i].labels[k].second) {
        Fail("round trip: labels");
      }
    }
    for (size_t k = 0; k < s.samples.size(); ++k) {
      if (std::memcmp(&s.samples[k].value, &in[i].samples[k].value, sizeof(double)) != 0 ||
          s.samples[k].timestamp_ms != in[i].samples[k].timestamp_ms) {
        Fail("round trip: samples");
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  inferscope::RwLimits tight;
  tight.max_series = 3;
  tight.max_labels = 2;
  tight.max_samples = 4;
  tight.max_decoded_bytes = 256;
  std::string reason;
  for (const inferscope::RwLimits& limits : {inferscope::RwLimits{}, tight}) {
    inferscope::RemoteWriteDecoder d(limits);
    reason.clear();
    if (d.Decode(input, &reason) == inferscope::RwError::kNone) {
      Check(d, input, true);
      RoundTrip(d);
    } else if (reason.empty()) {
      Fail("refused without a reason");
    }
    reason.clear();
    if (d.DecodeSnappy(input, &reason) == inferscope::RwError::kNone) {
      Check(d, input, false);
    } else if (reason.empty()) {
      Fail("refused without a reason");
    }
  }
  return 0;
}
