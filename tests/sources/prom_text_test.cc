#include "sources/prom_text.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "sources/prom_mapping.h"

namespace inferscope {
namespace {

struct Collected {
  std::string name;
  std::string family;
  std::string series;
  PromType type;
  PromRole role;
  std::vector<std::pair<std::string, std::string>> labels;  // raw values
  double value;
  bool has_timestamp;
  int64_t timestamp_ms;
};

class Collector final : public PromSampleSink {
 public:
  void OnSample(const PromSample& s) override {
    Collected c{std::string(s.name),
                std::string(s.family),
                std::string(s.series),
                s.type,
                s.role,
                {},
                s.value,
                s.has_timestamp,
                s.timestamp_ms};
    for (size_t i = 0; i < s.num_labels; ++i) {
      c.labels.emplace_back(std::string(s.labels[i].name), std::string(s.labels[i].value));
    }
    samples.push_back(std::move(c));
  }
  std::vector<Collected> samples;
};

PromParseStats ParseAll(std::string_view page, Collector& c, PromParserOptions o = {}) {
  PromTextParser parser(o);
  return parser.Parse(page, c);
}

uint64_t Skipped(const PromParseStats& s, PromSkip r) { return s.skipped[static_cast<size_t>(r)]; }

TEST(PromTextTest, ParsesLabelsValuesAndTimestamps) {
  Collector c;
  PromParseStats s = ParseAll(
      "# HELP http_requests_total The total number of HTTP requests.\n"
      "# TYPE http_requests_total counter\n"
      "http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n"
      "http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n"
      "\n"
      "# Escaping in label values:\n"
      "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n"
      "\\\"FILE.TXT\\\"\"} 1.458255915e9\n"
      "metric_without_timestamp_and_labels 12.47\n"
      "something_weird{problem=\"division by zero\"} +Inf -3982045\n",
      c);
  EXPECT_EQ(s.samples, 5u);
  EXPECT_EQ(s.skipped_total(), 0u);
  EXPECT_FALSE(s.openmetrics);
  ASSERT_EQ(c.samples.size(), 5u);
  EXPECT_EQ(c.samples[0].family, "http_requests_total");
  EXPECT_EQ(c.samples[0].type, PromType::kCounter);
  EXPECT_EQ(c.samples[0].role, PromRole::kTotal);
  EXPECT_EQ(c.samples[0].value, 1027);
  EXPECT_TRUE(c.samples[0].has_timestamp);
  EXPECT_EQ(c.samples[0].timestamp_ms, 1395066363000);
  EXPECT_EQ(c.samples[0].series, "http_requests_total{method=\"post\",code=\"200\"}");
  EXPECT_EQ(c.samples[1].value, 3);
  ASSERT_EQ(c.samples[2].labels.size(), 2u);
  std::string unescaped;
  UnescapeLabelValue(c.samples[2].labels[0].second, unescaped);
  EXPECT_EQ(unescaped, "C:\\DIR\\FILE.TXT");
  UnescapeLabelValue(c.samples[2].labels[1].second, unescaped);
  EXPECT_EQ(unescaped, "Cannot find file:\n\"FILE.TXT\"");
  EXPECT_DOUBLE_EQ(c.samples[2].value, 1.458255915e9);
  EXPECT_EQ(c.samples[2].type, PromType::kUntyped);  // no TYPE line for it
  EXPECT_EQ(c.samples[3].family, "metric_without_timestamp_and_labels");
  EXPECT_FALSE(c.samples[3].has_timestamp);
  EXPECT_TRUE(std::isinf(c.samples[4].value) && c.samples[4].value > 0);
  EXPECT_EQ(c.samples[4].timestamp_ms, -3982045);
}

TEST(PromTextTest, SpecialValuesAndExponents) {
  Collector c;
  PromParseStats s = ParseAll(
      "a NaN\nb +Inf\nc -Inf\nd 1e-3\ne -2.5E+2\nf .5\ng Inf\nh nan\ni 0x1p3\nj 1e999\nk --1\n", c);
  EXPECT_EQ(s.samples, 8u);
  EXPECT_EQ(Skipped(s, PromSkip::kBadValue), 3u);  // hex, out of range, double sign
  ASSERT_EQ(c.samples.size(), 8u);
  EXPECT_TRUE(std::isnan(c.samples[0].value));
  EXPECT_EQ(c.samples[1].value, INFINITY);
  EXPECT_EQ(c.samples[2].value, -INFINITY);
  EXPECT_DOUBLE_EQ(c.samples[3].value, 0.001);
  EXPECT_DOUBLE_EQ(c.samples[4].value, -250);
  EXPECT_DOUBLE_EQ(c.samples[5].value, 0.5);
  EXPECT_EQ(c.samples[6].value, INFINITY);
  EXPECT_TRUE(std::isnan(c.samples[7].value));
}

TEST(PromTextTest, HistogramSummaryAndSuffixes) {
  Collector c;
  PromParseStats s = ParseAll(
      "# TYPE req_seconds histogram\n"
      "req_seconds_bucket{le=\"0.05\"} 24054\n"
      "req_seconds_bucket{le=\"+Inf\"} 144320\n"
      "req_seconds_sum 53423\n"
      "req_seconds_count 144320\n"
      "# TYPE rpc_seconds summary\n"
      "rpc_seconds{quantile=\"0.5\"} 4773\n"
      "rpc_seconds_sum 1.7560473e+07\n"
      "rpc_seconds_count 2693\n"
      "# TYPE up gauge\n"
      "up 1\n"
      "up_total 2\n"  // not of the gauge family: untyped
      "# TYPE things untyped\n"
      "things 3\n",
      c);
  EXPECT_EQ(s.samples, 10u);
  ASSERT_EQ(c.samples.size(), 10u);
  const PromRole roles[] = {
      PromRole::kBucket, PromRole::kBucket, PromRole::kSum,   PromRole::kCount, PromRole::kQuantile,
      PromRole::kSum,    PromRole::kCount,  PromRole::kValue, PromRole::kValue, PromRole::kValue};
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(c.samples[i].role, roles[i]) << i;
  EXPECT_EQ(c.samples[0].family, "req_seconds");
  EXPECT_EQ(c.samples[0].type, PromType::kHistogram);
  EXPECT_EQ(c.samples[1].labels[0].second, "+Inf");
  EXPECT_EQ(c.samples[5].family, "rpc_seconds");
  EXPECT_EQ(c.samples[7].type, PromType::kGauge);
  EXPECT_EQ(c.samples[8].family, "up_total");
  EXPECT_EQ(c.samples[8].type, PromType::kUntyped);
  EXPECT_EQ(c.samples[9].family, "things");
}

TEST(PromTextTest, OpenMetricsTimestampsExemplarsAndEof) {
  Collector c;
  PromParseStats s = ParseAll(
      "# TYPE foo counter\n"
      "# UNIT foo seconds\n"
      "# HELP foo A counter.\n"
      "foo_total 17.0 1520879607.789 # {trace_id=\"oHg5SJYRHA0\"} 9.8 1520879602.890\n"
      "foo_created 1520430000.123\n"
      "# TYPE bar histogram\n"
      "bar_bucket{le=\"0.1\"} 8 # {id=\"x\"} 0.05\n"
      "bar_bucket{le=\"+Inf\"} 17\n"
      "bar_count 17\n"
      "bar_sum 324789.3\n"
      "bar_created 1520430000.123\n"
      "# TYPE pool info\n"
      "pool_info{name=\"a\"} 1\n"
      "# TYPE gh gaugehistogram\n"
      "gh_bucket{le=\"1\"} 3\n"
      "gh_gcount 3\n"
      "gh_gsum 2\n"
      "# EOF\n",
      c);
  EXPECT_TRUE(s.openmetrics);
  EXPECT_TRUE(s.saw_eof);
  EXPECT_EQ(s.skipped_total(), 0u);
  ASSERT_EQ(c.samples.size(), 11u);
  EXPECT_EQ(c.samples[0].role, PromRole::kTotal);
  EXPECT_EQ(c.samples[0].family, "foo");
  EXPECT_TRUE(c.samples[0].has_timestamp);
  EXPECT_EQ(c.samples[0].timestamp_ms, 1520879607789);
  EXPECT_EQ(c.samples[1].role, PromRole::kCreated);
  EXPECT_EQ(c.samples[2].role, PromRole::kBucket);
  EXPECT_EQ(c.samples[2].value, 8);
  EXPECT_FALSE(c.samples[2].has_timestamp);
  EXPECT_EQ(c.samples[6].role, PromRole::kCreated);
  EXPECT_EQ(c.samples[7].role, PromRole::kInfo);
  EXPECT_EQ(c.samples[7].type, PromType::kInfo);
  EXPECT_EQ(c.samples[8].role, PromRole::kBucket);
  EXPECT_EQ(c.samples[9].role, PromRole::kCount);
  EXPECT_EQ(c.samples[10].role, PromRole::kSum);
  EXPECT_EQ(c.samples[10].type, PromType::kGaugeHistogram);
}

TEST(PromTextTest, ContentAfterEofIsCountedNotParsed) {
  Collector c;
  PromTextParser parser({.format = PromFormat::kOpenMetrics});
  PromParseStats s = parser.Parse("a 1\n# EOF\nb 2\n", c);
  EXPECT_EQ(s.samples, 1u);
  EXPECT_EQ(Skipped(s, PromSkip::kAfterEof), 1u);
}

TEST(PromTextTest, MalformedLinesAreSkippedByReasonAndParsingGoesOn) {
  Collector c;
  PromParseStats s = ParseAll(
      "good 1\n"
      "{no=\"name\"} 1\n"        // bad name
      "9bad 1\n"                 // bad name
      "x{a=\"unterminated} 1\n"  // bad labels
      "x{a=b} 1\n"               // bad labels (unquoted)
      "x{a=\"1\" b=\"2\"} 1\n"   // bad labels (no comma)
      "x{a=\"\\\"\"} 1\n"        // escaped quote: fine
      "x{a=\"v\",} 2\n"          // trailing comma: fine
      "x{} 3\n"                  // empty label set: fine
      "x\n"                      // no value
      "x one\n"                  // bad value
      "x 1 12.5\n"               // 0.0.4 timestamps are integers
      "x 1 2 3\n"                // trailing garbage
      "# TYPE x flavour\n"       // bad type
      "# TYPE\n"                 // bad comment
      "# just a comment\n"       // ignored
      "x{a=\"1\"}\t7\r\n"        // tab and CRLF
      "good 2\n",
      c);
  EXPECT_EQ(s.samples, 6u);
  EXPECT_EQ(Skipped(s, PromSkip::kBadName), 2u);
  EXPECT_EQ(Skipped(s, PromSkip::kBadLabels), 3u);
  EXPECT_EQ(Skipped(s, PromSkip::kBadValue), 2u);
  EXPECT_EQ(Skipped(s, PromSkip::kBadTimestamp), 2u);
  EXPECT_EQ(Skipped(s, PromSkip::kBadComment), 2u);
  ASSERT_EQ(c.samples.size(), 6u);
  EXPECT_EQ(c.samples[1].labels[0].second, "\\\"");
  EXPECT_EQ(c.samples[4].value, 7);
  EXPECT_EQ(c.samples[4].labels[0].second, "1");
  EXPECT_EQ(c.samples[5].value, 2);
}

TEST(PromTextTest, LimitsAreCountedNotExceeded) {
  PromParserOptions o;
  o.max_line_bytes = 64;
  o.max_labels = 2;
  o.max_samples = 3;
  Collector c;
  std::string page = "a{x=\"1\",y=\"2\",z=\"3\"} 1\n";   // too many labels
  page += "b{v=\"" + std::string(100, 'q') + "\"} 1\n";  // too long
  page += "c 1\nd 2\ne 3\nf 4\ng 5\n";                   // 2 beyond max_samples
  PromParseStats s = ParseAll(page, c, o);
  EXPECT_EQ(s.samples, 3u);
  EXPECT_EQ(Skipped(s, PromSkip::kTooManyLabels), 1u);
  EXPECT_EQ(Skipped(s, PromSkip::kLineTooLong), 1u);
  EXPECT_EQ(Skipped(s, PromSkip::kTooManySamples), 2u);
  EXPECT_TRUE(o.Validate().ok());
  PromParserOptions bad;
  bad.max_labels = 0;
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(PromTextTest, EmptyAndBinaryInput) {
  Collector c;
  EXPECT_EQ(ParseAll("", c).samples, 0u);
  std::string junk;
  for (int i = 0; i < 2048; ++i) junk.push_back(static_cast<char>((i * 131) & 0xff));
  PromParseStats s = ParseAll(junk, c);
  EXPECT_EQ(s.samples + s.skipped_total() <= s.lines, true);
}

// The fixture pages: every sample is recognised (none skipped), and each family is either mapped
// to the expected inferscope metric or listed as not carried.
std::string ReadFixture(const std::string& name) {
  std::ifstream in(std::string(INFERSCOPE_SOURCE_DIR) + "/tests/data/prometheus/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct FixtureCase {
  std::string file;
  size_t samples;
  // family → inferscope metric of its mapped samples ("" when the family is not carried).
  std::map<std::string, std::string> families;
};

TEST(PromTextTest, FixturePagesEverySampleRecognisedAndMappingChecked) {
  const std::vector<FixtureCase> cases = {
      {"vllm-metrics.txt",
       14,
       {{"vllm:num_requests_running", "num_requests_running"},
        {"vllm:generation_tokens_total", "generation_tokens_per_s"},
        {"vllm:request_success_total", "requests_per_s"},
        {"vllm:time_to_first_token_seconds", "ttft_mean_ms"}}},
      {"vllm-metrics-v0-engine.txt",
       29,
       {{"vllm:cache_config_info", ""},
        {"vllm:num_requests_running", "num_requests_running"},
        {"vllm:num_requests_swapped", "num_requests_swapped"},
        {"vllm:num_requests_waiting", "num_requests_waiting"},
        {"vllm:gpu_cache_usage_perc", "kv_cache_usage"},
        {"vllm:cpu_cache_usage_perc", "cpu_kv_cache_usage"},
        {"vllm:cpu_prefix_cache_hit_rate", ""},
        {"vllm:gpu_prefix_cache_hit_rate", "prefix_cache_hit_rate"},
        {"vllm:lora_requests_info", ""},
        {"vllm:num_preemptions_total", "num_preemptions"},
        {"vllm:prompt_tokens_total", "prompt_tokens_per_s"},
        {"vllm:generation_tokens_total", "generation_tokens_per_s"},
        {"vllm:request_success_total", "requests_per_s"},
        {"vllm:iteration_tokens_total", ""}}},
      {"sglang-metrics.txt",
       91,
       {{"sglang:prompt_tokens_total", "prompt_tokens_per_s"},
        {"sglang:generation_tokens_total", "generation_tokens_per_s"},
        {"sglang:token_usage", "kv_cache_usage"},
        {"sglang:cache_hit_rate", "prefix_cache_hit_rate"},
        {"sglang:time_to_first_token_seconds", "ttft_mean_ms"},
        {"sglang:e2e_request_latency_seconds", "e2e_mean_ms"},
        {"sglang:time_per_output_token_seconds", "tpot_mean_ms"},
        {"sglang:func_latency_seconds", ""},
        {"sglang:num_running_reqs", "num_requests_running"},
        {"sglang:num_used_tokens", "kv_cache_used_tokens"},
        {"sglang:gen_throughput", ""},
        {"sglang:num_queue_reqs", "num_requests_waiting"}}},
  };
  size_t total = 0;
  for (const FixtureCase& fc : cases) {
    SCOPED_TRACE(fc.file);
    const std::string page = ReadFixture(fc.file);
    ASSERT_FALSE(page.empty());
    Collector c;
    PromParseStats s = ParseAll(page, c);
    EXPECT_EQ(s.samples, fc.samples);
    EXPECT_EQ(s.skipped_total(), 0u);
    total += s.samples;
    std::set<std::string> seen;
    size_t mapped = 0;
    size_t not_carried = 0;
    for (const Collected& sample : c.samples) {
      EXPECT_NE(sample.type, PromType::kUntyped) << sample.name;  // every family is TYPEd
      auto it = fc.families.find(sample.family);
      ASSERT_NE(it, fc.families.end()) << "unexpected family " << sample.family;
      seen.insert(sample.family);
      const PromMapping* m = FindPromMapping(PromEngine::kAuto, sample.family, sample.role);
      if (m == nullptr) {
        ++not_carried;
        // Only histogram buckets of mapped families, and unmapped families, go uncarried.
        EXPECT_TRUE(it->second.empty() || sample.role == PromRole::kBucket) << sample.name;
        continue;
      }
      ++mapped;
      EXPECT_EQ(m->metric, it->second) << sample.name;
      // The engine-specific table finds it too.
      const PromEngine engine =
          sample.family.rfind("vllm:", 0) == 0 ? PromEngine::kVllm : PromEngine::kSglang;
      EXPECT_EQ(FindPromMapping(engine, sample.family, sample.role), m);
      EXPECT_EQ(FindPromMapping(PromEngine::kTgi, sample.family, sample.role), nullptr);
    }
    EXPECT_EQ(seen.size(), fc.families.size());
    EXPECT_EQ(mapped + not_carried, fc.samples);
  }
  EXPECT_EQ(total, 134u);  // the count of samples in these pages
}

}  // namespace
}  // namespace inferscope
