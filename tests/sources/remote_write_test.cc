// The remote-write decoder (sources/remote_write_decode.h) on handcrafted bytes — truncated,
// oversize, wrong wire types, unknown fields — and the prometheus_remote_write source in process
// over real HTTP on 127.0.0.1 (port read back): replies and their reasons, counters by result,
// gauges and reset-aware counter rates through the shared converter.

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sources/remote_write_decode.h"
#include "sources/remote_write_source.h"
#include "tests/sources/collecting_output.h"

namespace inferscope {
namespace {

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string Len(uint32_t field, const std::string& bytes) {
  return Varint((field << 3) | 2) + Varint(bytes.size()) + bytes;
}
std::string Double(uint32_t field, double v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, 8);
  std::string out = Varint((field << 3) | 1);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  return out;
}
std::string Label(const std::string& n, const std::string& v) {
  return Len(1, Len(1, n) + Len(2, v));
}
std::string Sample(double v, int64_t ts) {
  return Len(2, Double(1, v) + Varint((2 << 3) | 0) + Varint(static_cast<uint64_t>(ts)));
}

TEST(RemoteWriteDecodeTest, HandcraftedRequest) {
  // Two series; unknown fields of every wire type in every message are skipped; metadata (3),
  // exemplars (3 in TimeSeries) and native histograms (4) are counted and skipped.
  const std::string unknown = Varint((9 << 3) | 0) + Varint(300) + Varint((10 << 3) | 5) +
                              std::string(4, 'x') + Varint((11 << 3) | 1) + std::string(8, 'y') +
                              Len(12, "zz");
  const std::string ts1 = Label("__name__", "vllm:num_requests_running") + Label("instance", "a") +
                          Sample(4, 1000) + Sample(5, 2000) + Len(3, "exemplar") +
                          Len(4, "histogram") + unknown;
  const std::string ts2 = Label("__name__", "x") + Len(1, Len(1, "k") + unknown + Len(2, "v")) +
                          Len(2, Double(1, -1.5) + unknown + Varint(2 << 3) + Varint(7));
  const std::string req = Len(1, ts1) + Len(3, "metadata") + unknown + Len(1, ts2);
  RemoteWriteDecoder d;
  std::string reason;
  ASSERT_EQ(d.Decode(req, &reason), RwError::kNone) << reason;
  ASSERT_EQ(d.series().size(), 2u);
  EXPECT_EQ(d.series()[0].Label("__name__"), "vllm:num_requests_running");
  EXPECT_EQ(d.series()[0].Label("instance"), "a");
  ASSERT_EQ(d.series()[0].samples.size(), 2u);
  EXPECT_EQ(d.series()[0].samples[1].value, 5);
  EXPECT_EQ(d.series()[0].samples[1].timestamp_ms, 2000);
  EXPECT_EQ(d.series()[1].Label("k"), "v");
  EXPECT_EQ(d.series()[1].samples[0].value, -1.5);
  EXPECT_EQ(d.series()[1].samples[0].timestamp_ms, 7);
  EXPECT_EQ(d.stats().metadata, 1u);
  EXPECT_EQ(d.stats().exemplars, 1u);
  EXPECT_EQ(d.stats().histograms, 1u);
  EXPECT_EQ(d.stats().samples, 3u);
  // Zero copy: the views point into the request.
  const std::string_view name = d.series()[0].labels[0].value;
  EXPECT_GE(name.data(), req.data());
  EXPECT_LE(name.data() + name.size(), req.data() + req.size());
  // Negative timestamps (int64 as a 10-byte varint) come back as they were.
  RemoteWriteDecoder d2;
  ASSERT_EQ(d2.Decode(Len(1, Label("__name__", "n") + Sample(1, -5)), &reason), RwError::kNone);
  EXPECT_EQ(d2.series()[0].samples[0].timestamp_ms, -5);
}

TEST(RemoteWriteDecodeTest, EncoderRoundTripAndSnappy) {
  std::vector<RwSeriesInput> in(2);
  in[0].labels = {{"__name__", "a"}, {"le", "+Inf"}};
  in[0].samples = {{1.25, 1718000000123}, {NAN, 1718000001123}};
  in[1].labels = {{"__name__", "b"}};
  in[1].samples = {{-0.0, 0}};
  const std::string raw = EncodeWriteRequest(in);
  RemoteWriteDecoder d;
  std::string reason;
  ASSERT_EQ(d.DecodeSnappy(SnappyCompress(raw), &reason), RwError::kNone) << reason;
  ASSERT_EQ(d.series().size(), 2u);
  EXPECT_EQ(d.series()[0].Label("le"), "+Inf");
  EXPECT_EQ(d.series()[0].samples[0].value, 1.25);
  EXPECT_TRUE(std::isnan(d.series()[0].samples[1].value));
  EXPECT_EQ(d.series()[0].samples[1].timestamp_ms, 1718000001123);
  EXPECT_TRUE(std::signbit(d.series()[1].samples[0].value));
  // Raw protobuf is not a snappy block.
  EXPECT_NE(d.DecodeSnappy("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", &reason), RwError::kNone);
  EXPECT_EQ(d.DecodeSnappy(std::string("\x05\x00", 2), &reason), RwError::kBadSnappy) << reason;
}

TEST(RemoteWriteDecodeTest, TruncatedAtEveryByteIsRefusedOrShorter) {
  std::vector<RwSeriesInput> in(1);
  in[0].labels = {{"__name__", "vllm:num_requests_running"}, {"instance", "i"}};
  in[0].samples = {{3, 1000}};
  const std::string raw = EncodeWriteRequest(in);
  for (size_t n = 1; n < raw.size(); ++n) {
    RemoteWriteDecoder d;
    std::string reason;
    EXPECT_EQ(d.Decode(raw.substr(0, n), &reason), RwError::kBadProtobuf) << n;
    EXPECT_FALSE(reason.empty());
    EXPECT_TRUE(d.series().empty());
  }
}

TEST(RemoteWriteDecodeTest, WrongWireTypesAndBadVarints) {
  RemoteWriteDecoder d;
  std::string reason;
  // timeseries as a varint
  EXPECT_EQ(d.Decode(Varint(1 << 3) + Varint(5), &reason), RwError::kBadProtobuf);
  EXPECT_EQ(reason, "WriteRequest: timeseries not length-delimited");
  // labels as fixed64
  EXPECT_EQ(d.Decode(Len(1, Double(1, 1)), &reason), RwError::kBadProtobuf);
  // label name as a varint
  EXPECT_EQ(d.Decode(Len(1, Len(1, Varint(1 << 3) + Varint(1))), &reason), RwError::kBadProtobuf);
  EXPECT_EQ(reason, "Label: name/value not a string");
  // sample value as a varint, timestamp as fixed64
  EXPECT_EQ(d.Decode(Len(1, Len(2, Varint(1 << 3) + Varint(1))), &reason), RwError::kBadProtobuf);
  EXPECT_EQ(d.Decode(Len(1, Len(2, Double(2, 1))), &reason), RwError::kBadProtobuf);
  // group wire types, field 0, an 11-byte varint
  EXPECT_EQ(d.Decode(Varint((5 << 3) | 3), &reason), RwError::kBadProtobuf);
  EXPECT_EQ(d.Decode(Varint(0) + Varint(1), &reason), RwError::kBadProtobuf);
  EXPECT_EQ(d.Decode(Varint(7 << 3) + std::string(10, '\xff') + "\x01", &reason),
            RwError::kBadProtobuf);
  // a length beyond the payload
  EXPECT_EQ(d.Decode(Varint((1 << 3) | 2) + Varint(1'000'000) + "ab", &reason),
            RwError::kBadProtobuf);
  // empty is a valid, empty request
  EXPECT_EQ(d.Decode("", &reason), RwError::kNone);
  EXPECT_TRUE(d.series().empty());
}

TEST(RemoteWriteDecodeTest, LimitsAreCheckedBeforeAllocating) {
  RwLimits limits;
  limits.max_decoded_bytes = 1024;
  limits.max_series = 2;
  limits.max_labels = 2;
  limits.max_samples = 3;
  RemoteWriteDecoder d(limits);
  std::string reason;
  // A snappy header announcing 1 GiB is refused from the header alone.
  EXPECT_EQ(d.DecodeSnappy(Varint(uint64_t{1} << 30) + std::string(1, 0), &reason),
            RwError::kTooLarge);
  EXPECT_EQ(d.Decode(std::string(2000, '\0'), &reason), RwError::kTooLarge);
  const std::string s = Len(1, Label("__name__", "a") + Sample(1, 1));
  EXPECT_EQ(d.Decode(s + s, &reason), RwError::kNone);
  EXPECT_EQ(d.Decode(s + s + s, &reason), RwError::kTooMany);
  EXPECT_EQ(reason, "WriteRequest: too many series");
  EXPECT_EQ(d.Decode(Len(1, Label("a", "1") + Label("b", "2") + Label("c", "3")), &reason),
            RwError::kTooMany);
  EXPECT_EQ(
      d.Decode(Len(1, Sample(1, 1) + Sample(1, 2)) + Len(1, Sample(1, 3) + Sample(1, 4)), &reason),
      RwError::kTooMany);
}

// ---- The source over real HTTP ----

using testing::CollectingOutput;

bool WaitUntil(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling, not synchronising
  }
  return done();
}

class Harness {
 public:
  explicit Harness(RemoteWriteSource::Options options) : source(std::move(options)) {
    StageContext ctx;
    ctx.name = "rw";
    ctx.interner = &interner;
    ctx.metrics = &metrics;
    ctx.clock = &SystemClock::Instance();
    Status st = source.Open(ctx);
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (st.ok()) thread = std::thread([this] { run_status = source.Run(output, stop); });
  }
  ~Harness() {
    stop = true;
    if (thread.joinable()) thread.join();
    EXPECT_TRUE(run_status.ok()) << run_status.ToString();
    source.Close();
  }
  uint64_t Requests(const std::string& result) const {
    return metrics.CounterValue("inferscope_remote_write_requests_total",
                                {{"stage", "rw"}, {"result", result}});
  }
  httplib::Result Post(const std::string& body, const std::string& encoding = "snappy") {
    httplib::Client c(source.Endpoint());
    httplib::Headers h = {{"X-Prometheus-Remote-Write-Version", "0.1.0"}};
    if (!encoding.empty()) h.emplace("Content-Encoding", encoding);
    return c.Post("/api/v1/write", h, body, "application/x-protobuf");
  }
  std::vector<double> Values(const std::string& metric, const std::string& instance) {
    std::vector<double> out;
    for (const Event& e : output.events()) {
      if (interner.Name(e.metric) == metric && interner.Name(e.instance) == instance) {
        out.push_back(e.value);
      }
    }
    return out;
  }

  Interner interner;
  MetricsRegistry metrics;
  CollectingOutput output;
  RemoteWriteSource source;
  std::atomic<bool> stop{false};
  std::thread thread;
  Status run_status;
};

RemoteWriteSource::Options TestOptions() {
  RemoteWriteSource::Options o;
  o.port = 0;
  o.flush_delay_ms = 0;
  o.max_body_bytes = 4096;
  o.max_decoded_bytes = 64 * 1024;
  return o;
}

TEST(RemoteWriteSourceTest, BadPayloadsAreRefusedWithReasons) {
  Harness h(TestOptions());
  ASSERT_EQ(h.source.Endpoint().rfind("http://127.0.0.1:", 0), 0u) << h.source.Endpoint();
  auto reason = [](const httplib::Result& r) {
    const nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
    return j.is_object() ? j.value("error", "")
                         : "status " + std::to_string(r->status) + " body " + r->body;
  };
  auto r = h.Post("not snappy at all");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(reason(r), "bad_snappy");
  r = h.Post(SnappyCompress("\x0a\x05garbage"));
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(reason(r), "bad_protobuf");
  r = h.Post(SnappyCompress("x"), "gzip");  // httplib's gzip decoding fails first
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(reason(r), "bad_encoding");
  r = h.Post(SnappyCompress("x"), "");  // no Content-Encoding
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(reason(r), "bad_encoding");
  r = h.Post(std::string(5000, 'a'));  // beyond max_body_bytes: httplib refuses, we count
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(reason(r), "too_large");
  r = h.Post(SnappyCompress(std::string(100'000, '\0')));  // small body, big payload
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(reason(r), "too_large");
  r = h.Post(SnappyCompress(""));
  EXPECT_EQ(r->status, 204);
  EXPECT_EQ(h.Requests("bad_snappy"), 1u);
  EXPECT_EQ(h.Requests("bad_protobuf"), 1u);
  EXPECT_EQ(h.Requests("bad_encoding"), 2u);
  EXPECT_EQ(h.Requests("too_large"), 2u);
  EXPECT_EQ(h.Requests("ok"), 1u);
}

TEST(RemoteWriteSourceTest, GaugesAndResetAwareCounterRates) {
  Harness h(TestOptions());
  // Three scrapes of one vLLM instance, 1 s apart; the preemption counter 0 → 3 → 1 (a reset);
  // the generation-token counter 100 → 600 → 1100; a series without the instance label and an
  // unmapped name are counted, not converted.
  const double preempt[] = {0, 3, 1};
  for (int k = 0; k < 3; ++k) {
    const int64_t ts = 1'718'000'000'000 + 1000 * k;
    std::vector<RwSeriesInput> in(5);
    in[0].labels = {{"__name__", "vllm:num_requests_running"},
                    {"instance", "10.0.0.1:8000"},
                    {"model_name", "m"}};
    in[0].samples = {{4.0 + k, ts}};
    in[1].labels = {{"__name__", "vllm:num_preemptions_total"},
                    {"instance", "10.0.0.1:8000"},
                    {"model_name", "m"}};
    in[1].samples = {{preempt[k], ts}};
    in[2].labels = {{"__name__", "vllm:generation_tokens_total"},
                    {"instance", "10.0.0.1:8000"},
                    {"model_name", "m"}};
    in[2].samples = {{100.0 + 500 * k, ts}};
    in[3].labels = {{"__name__", "vllm:num_requests_running"}, {"model_name", "m"}};
    in[3].samples = {{9, ts}};
    in[4].labels = {{"__name__", "go_goroutines"}, {"instance", "10.0.0.1:8000"}};
    in[4].samples = {{9, ts}};
    auto r = h.Post(SnappyCompress(EncodeWriteRequest(in)));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 204) << r->body;
    // Each scrape is converted before the next is sent (flush_delay 0), as with a real sender.
    ASSERT_TRUE(WaitUntil([&] {
      return h.Values("num_requests_running", "10.0.0.1:8000").size() == static_cast<size_t>(k + 1);
    }));
  }
  EXPECT_EQ(h.Values("num_requests_running", "10.0.0.1:8000"), (std::vector<double>{4, 5, 6}));
  EXPECT_EQ(h.Values("num_preemptions", "10.0.0.1:8000"), (std::vector<double>{3, 1}));
  EXPECT_EQ(h.Values("generation_tokens_per_s", "10.0.0.1:8000"), (std::vector<double>{500, 500}));
  for (const Event& e : h.output.events()) {
    EXPECT_EQ(h.interner.Name(e.model), "m");
    EXPECT_EQ(h.interner.Name(e.publisher), "remote_write/rw");
    EXPECT_GE(e.time_ms, 1'718'000'000'000);
  }
  EXPECT_EQ(
      h.metrics.CounterValue("inferscope_remote_write_counter_resets_total", {{"stage", "rw"}}),
      1u);
  EXPECT_EQ(h.metrics.CounterValue("inferscope_remote_write_no_instance_samples_total",
                                   {{"stage", "rw"}}),
            3u);
  EXPECT_EQ(
      h.metrics.CounterValue("inferscope_remote_write_unmapped_samples_total", {{"stage", "rw"}}),
      3u);
  // A sample older than what was converted is late.
  std::vector<RwSeriesInput> old(1);
  old[0].labels = {{"__name__", "vllm:num_requests_running"}, {"instance", "10.0.0.1:8000"}};
  old[0].samples = {{1, 1'718'000'000'000}};
  ASSERT_EQ(h.Post(SnappyCompress(EncodeWriteRequest(old)))->status, 204);
  EXPECT_EQ(h.metrics.CounterValue("inferscope_remote_write_late_samples_total", {{"stage", "rw"}}),
            1u);
}

TEST(RemoteWriteSourceTest, PendingBoundGives503) {
  RemoteWriteSource::Options o = TestOptions();
  o.flush_delay_ms = 60'000;  // nothing is converted during the test
  o.max_pending_samples = 3;
  Harness h(o);
  std::vector<RwSeriesInput> in(1);
  in[0].labels = {{"__name__", "vllm:num_requests_running"}, {"instance", "a"}};
  in[0].samples = {{1, 1000}, {2, 2000}};
  EXPECT_EQ(h.Post(SnappyCompress(EncodeWriteRequest(in)))->status, 204);
  auto r = h.Post(SnappyCompress(EncodeWriteRequest(in)));
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(h.Requests("busy"), 1u);
}

}  // namespace
}  // namespace inferscope
