// The name limit (pipeline/names.h, kMaxNameBytes = 255) is enforced once, at the source: a name
// one byte longer is rejected by the decoder with a counted reason and reaches nothing else, while
// a name of exactly the limit is decoded, stored and served by the query API.

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "clients/cpp/publisher.h"
#include "pipeline/names.h"
#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: name-limit
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options: {pane: 1s, out_of_orderness: 0s, idle_timeout: 0s}
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

// The value of the sample of `name` whose line contains `label` (-1 when there is none).
double Sample(const std::string& text, const std::string& name, const std::string& label) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + "{", 0) == 0 && line.find(label) != std::string::npos) {
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return -1;
}

client::RequestOutcome Request(std::string_view instance, std::string_view model, int64_t t) {
  client::RequestOutcome r;
  r.instance = instance;
  r.model = model;
  r.e2e_ms = 100;
  r.time_ms = t;
  return r;
}

TEST(NameLimitTest, LongerNamesAreRejectedAtTheSourceAndTheLimitIsStoredAndServed) {
  static_assert(kMaxNameBytes == 255);
  TempDir dir;
  EngineProcess engine(dir, Substitute(kTopology, {{"STATE", dir.str() + "/state"}}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();

  const std::string at_limit(kMaxNameBytes, 'a');
  const std::string over(kMaxNameBytes + 1, 'b');
  client::PublisherOptions options;
  options.endpoint = engine.Endpoint("ingest");
  options.publisher_id = "limits";
  options.batch_size = 1000;
  client::Publisher pub(options);
  ASSERT_TRUE(pub.Connect());
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const int64_t t0 = (now - 60'000) / 1000 * 1000;
  // One message: a name at the limit in every field, and one name over it per field.
  ASSERT_TRUE(pub.Request(Request(at_limit, at_limit, t0 + 100)));
  ASSERT_TRUE(pub.Gauge(at_limit, at_limit, at_limit, 0.5, t0 + 100));
  ASSERT_TRUE(pub.Request(Request(over, "m", t0 + 100)));
  ASSERT_TRUE(pub.Request(Request("i", over, t0 + 100)));
  ASSERT_TRUE(pub.Gauge("i", "m", over, 0.5, t0 + 100));
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
  // Closes the pane [t0, t0 + 1 s).
  ASSERT_TRUE(pub.Request(Request(at_limit, at_limit, t0 + 5000)));
  ASSERT_TRUE(pub.Flush()) << pub.last_error();

  // Rejected by the decoder, counted by reason: the three events with a name over the limit.
  std::string metrics;
  ASSERT_TRUE(WaitFor([&] {
    auto res = engine.http().Get("/metrics");
    metrics = res ? res->body : "";
    return Sample(metrics, "inferscope_source_events_total", "stage=\"ingest\"") == 3;
  })) << metrics;
  EXPECT_EQ(Sample(metrics, "inferscope_source_rejected_total", "reason=\"string_too_long\""), 3)
      << metrics;

  // The names at the limit are stored and served.
  const std::string path = "/v1/instances/" + at_limit + "/summary?model=" + at_limit +
                           "&metric=e2e_ms&window=1s&from=" + std::to_string(t0) +
                           "&to=" + std::to_string(t0 + 1000);
  json summary;
  ASSERT_TRUE(WaitFor([&] {
    auto res = engine.http().Get(path);
    if (!res || res->status != 200) return false;
    summary = json::parse(res->body, nullptr, false);
    return summary.is_object() && summary["windows"].is_array() && summary["windows"].size() == 1 &&
           summary["windows"][0]["count"] == 1;
  })) << summary.dump()
      << engine.Log();
  EXPECT_EQ(summary["instance"], at_limit);
  auto gauge = engine.http().Get("/v1/instances/" + at_limit + "/summary?metric=" + at_limit +
                                 "&window=1s&from=" + std::to_string(t0) +
                                 "&to=" + std::to_string(t0 + 1000));
  ASSERT_TRUE(gauge);
  EXPECT_EQ(gauge->status, 200) << gauge->body;

  // Nothing over the limit reached the store; the API refuses to look such a name up.
  auto instances = engine.http().Get("/v1/instances");
  ASSERT_TRUE(instances);
  EXPECT_NE(instances->body.find(at_limit), std::string::npos);
  EXPECT_EQ(instances->body.find(over.substr(0, 16)), std::string::npos) << instances->body;
  EXPECT_EQ(instances->body.find("\"i\""), std::string::npos) << instances->body;
  auto refused = engine.http().Get("/v1/instances/" + over + "/summary");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400) << refused->body;
  EXPECT_EQ(Sample(engine.http().Get("/metrics")->body, "inferscope_sink_write_errors_total",
                   "stage=\"state\""),
            0);
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
