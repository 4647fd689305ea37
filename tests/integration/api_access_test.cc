// Access control and the Prometheus export as a user runs them: `inferscope run` on the default
// topology with a token file named in its `query` section, fed by `inferscope simulate`, and
// `inferscope query-node --tokens FILE` on the same state directory. Both honour the tokens and
// scopes; the export of the engine passes `promtool check metrics` and equals the summary API for
// the same window; neither process listens on a non-loopback address without tokens.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::ReadFile;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kReader[] = "grafana-9d1c5e0f3a7b4c2d8e6f";
constexpr char kWriter[] = "ops-bot-4b7e2a9c1d3f5e6a8b0c";

std::string TopologyOnFreePorts(const std::string& query_extra) {
  std::string text = Substitute(
      ReadFile(testing::SourceDir() + "/topologies/inference-fleet.yaml"),
      {{"  listen: 127.0.0.1:8080", std::string("  listen: 127.0.0.1:0\n") + query_extra}});
  return std::regex_replace(text, std::regex(R"(tcp://127\.0\.0\.1:\d+)"), "tcp://127.0.0.1:*");
}

std::string WriteTokenFile(const TempDir& dir) {
  const std::string path = dir.str() + "/tokens";
  std::ofstream(path) << "# NAME SCOPES TOKEN\n"
                      << "grafana read " << kReader << "\n"
                      << "ops-bot read,write " << kWriter << "\n";
  ::chmod(path.c_str(), 0600);
  return path;
}

std::string FindPromtool() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(std::string(path == nullptr ? "" : path) + ":/usr/local/bin:/usr/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/promtool";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

httplib::Headers Bearer(const std::string& token) {
  return {{"Authorization", std::string("Bearer ") + token}};
}

void ExpectError(const httplib::Result& res, int status, const std::string& code) {
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, status) << res->body;
  json body = json::parse(res->body, nullptr, false);
  ASSERT_TRUE(body.is_object()) << res->body;
  EXPECT_EQ(body["error"]["code"], code) << res->body;
  EXPECT_TRUE(body["error"]["message"].is_string()) << res->body;
  EXPECT_TRUE(body["error"]["details"].is_object()) << res->body;
  EXPECT_TRUE(body["timestamp"].is_string()) << res->body;
}

std::optional<double> Sample(const std::string& text, const std::string& line_prefix) {
  const std::string needle = std::string("\n") + line_prefix + " ";
  const size_t at = (std::string("\n") + text).find(needle);
  if (at == std::string::npos) return std::nullopt;
  const std::string padded = std::string("\n") + text;
  const size_t start = at + needle.size();
  const size_t end = padded.find('\n', start);
  double v = 0;
  auto [ptr, ec] = std::from_chars(padded.data() + start, padded.data() + end, v);
  if (ec != std::errc() || ptr != padded.data() + end) return std::nullopt;
  return v;
}

// The instances with samples in an export page.
std::set<std::string> ExportedInstances(const std::string& text) {
  std::set<std::string> out;
  const std::regex re(R"(inferscope_e2e_seconds\{instance="([^"]+)\")");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
       ++it) {
    out.insert((*it)[1].str());
  }
  return out;
}

TEST(ApiAccessTest, EngineAndQueryNodeHonourTokensAndTheExportPassesPromtool) {
  const std::string promtool = FindPromtool();
  ASSERT_FALSE(promtool.empty()) << "promtool not found (scripts/install-deps.sh installs it)";
  TempDir dir;
  const std::string tokens = WriteTokenFile(dir);
  const std::string state = dir.str() + "/state";
  auto engine = std::make_unique<EngineProcess>(
      dir,
      EngineProcess::Options{TopologyOnFreePorts(std::string("  token_file: ") + tokens + "\n"),
                             "engine",
                             {"--state-dir", state}});
  ASSERT_TRUE(engine->WaitReady()) << engine->Log();
  httplib::Client& http = engine->http();

  // The engine's API: tokens and scopes.
  ExpectError(http.Get("/v1/instances"), 401, "UNAUTHORIZED");
  ExpectError(http.Post("/v1/silences", Bearer(kReader), "{}", "application/json"), 403,
              "FORBIDDEN");
  auto res =
      http.Post("/v1/silences", Bearer(kWriter),
                R"({"matchers": {"instance": "vllm-*"}, "duration": "10m", "comment": "access"})",
                "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 201) << res->body;
  EXPECT_NE(engine->Log().find("2 API token(s)"), std::string::npos) << engine->Log();

  // Data: the simulator, 40 simulated seconds ending now.
  Subprocess sim({testing::InferscopeBinary(), "simulate", "--endpoint", engine->Endpoint("ingest"),
                  "--instances", "3", "--models", "1", "--rate", "30", "--duration", "4", "--speed",
                  "10", "--seed", "7"},
                 dir.str() + "/sim.log");
  ASSERT_EQ(sim.Wait(std::chrono::seconds(60)), 0) << ReadFile(dir.str() + "/sim.log");

  // The export of the latest closed 10 s window: every simulated instance, once stored.
  std::string text;
  ASSERT_TRUE(WaitFor([&] {
    auto r = http.Get("/v1/export/prometheus?window=10s", Bearer(kReader));
    if (!r || r->status != 200) return false;
    text = r->body;
    return ExportedInstances(text).size() == 3;
  })) << text;
  const std::string scrape = dir.str() + "/export.txt";
  std::ofstream(scrape) << text;
  Subprocess check(
      {"/bin/sh", "-c", std::string("'") + promtool + "' check metrics < '" + scrape + "'"},
      dir.str() + "/promtool.log");
  EXPECT_EQ(check.Wait(), 0) << ReadFile(dir.str() + "/promtool.log") << "\n" << text;

  // The scrape configuration the docs give is valid for Prometheus (promtool check config), and a
  // request made as that scrape makes it (path, params, bearer token from credentials_file,
  // Prometheus' Accept header) gets the text format.
  const std::string credentials = dir.str() + "/prometheus.token";
  std::ofstream(credentials) << kReader << "\n";
  const std::string host_port = engine->HttpUrl().substr(std::string("http://").size());
  const std::string config = dir.str() + "/prometheus.yml";
  std::ofstream(config) << "scrape_configs:\n"
                           "  - job_name: inferscope\n"
                           "    scrape_interval: 60s\n"
                           "    metrics_path: /v1/export/prometheus\n"
                           "    params: {window: [1m]}\n"
                           "    authorization: {type: Bearer, credentials_file: "
                        << credentials << "}\n"
                        << "    static_configs: [{targets: [\"" << host_port << "\"]}]\n";
  Subprocess check_config({promtool, "check", "config", config}, dir.str() + "/config.log");
  EXPECT_EQ(check_config.Wait(), 0) << ReadFile(dir.str() + "/config.log");
  res = http.Get("/v1/export/prometheus?window=1m",
                 {{"Authorization", std::string("Bearer ") + kReader},
                  {"Accept",
                   "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                   "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  EXPECT_NE(res->body.find("inferscope_export_window_seconds 60\n"), std::string::npos)
      << res->body;

  // The same window through the summary API: the same numbers.
  const std::optional<double> start_s =
      Sample(text, "inferscope_export_window_start_timestamp_seconds");
  ASSERT_TRUE(start_s);
  const int64_t from = static_cast<int64_t>(*start_s * 1000);
  for (const std::string& instance : ExportedInstances(text)) {
    auto r = http.Get(std::string("/v1/instances/") + instance +
                          "/summary?metric=ttft_ms&window=10s&from=" + std::to_string(from) +
                          "&to=" + std::to_string(from + 10'000),
                      Bearer(kReader));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json body = json::parse(r->body);
    ASSERT_EQ(body["models"].size(), 1u) << body;
    const std::string model = body["models"][0];
    const json& w = body["windows"][0];
    const std::string labels =
        std::string("{instance=\"") + instance + "\",model=\"" + model + "\"";
    for (const auto& [q, field] : std::map<std::string, std::string>{
             {"0", "min"}, {"0.5", "p50"}, {"0.95", "p95"}, {"0.99", "p99"}, {"1", "max"}}) {
      EXPECT_EQ(Sample(text, std::string("inferscope_ttft_seconds") + labels + ",quantile=\"" + q +
                                 "\"}"),
                w[field].get<double>() / 1000)
          << instance << " " << q;
    }
    r = http.Get(std::string("/v1/instances/") + instance +
                     "/summary?metric=e2e_ms&window=10s&from=" + std::to_string(from) +
                     "&to=" + std::to_string(from + 10'000),
                 Bearer(kReader));
    ASSERT_TRUE(r);
    const json e2e = json::parse(r->body)["windows"][0];
    EXPECT_EQ(Sample(text, std::string("inferscope_requests_per_second") + labels + "}"),
              e2e["events"].get<double>() / 10);
  }

  // A query node with the same token file: the same rules.
  const std::string ready = dir.str() + "/node.ready.json";
  Subprocess node({testing::InferscopeBinary(), "query-node", "--state-dir", state, "--listen",
                   "127.0.0.1:0", "--catch-up-interval", "100ms", "--tokens", tokens,
                   "--engine-url", engine->HttpUrl(), "--ready-file", ready},
                  dir.str() + "/node.log");
  ASSERT_TRUE(WaitFor([&] { return !ReadFile(ready).empty() || !node.Running(); }));
  json info = json::parse(ReadFile(ready), nullptr, false);
  ASSERT_TRUE(info.is_object()) << ReadFile(dir.str() + "/node.log");
  httplib::Client node_http(info["http"].get<std::string>());
  ExpectError(node_http.Get("/v1/instances"), 401, "UNAUTHORIZED");
  ExpectError(node_http.Get("/v1/instances", Bearer("wrong-token-0123456789abcdef")), 401,
              "UNAUTHORIZED");
  res = node_http.Get("/v1/instances", Bearer(kReader));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  ExpectError(node_http.Post("/v1/silences", Bearer(kReader), "{}", "application/json"), 403,
              "FORBIDDEN");
  // With the write scope, the read-only node's own answer.
  ExpectError(node_http.Post("/v1/silences", Bearer(kWriter), "{}", "application/json"), 405,
              "READ_ONLY");
  res = node_http.Get("/v1/export/prometheus?window=10s", Bearer(kReader));
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(ExportedInstances(res->body).size(), 3u) << res->body;

  node.Signal(SIGTERM);
  EXPECT_EQ(node.Wait(), 0) << ReadFile(dir.str() + "/node.log");
  EXPECT_EQ(engine->Stop(), 0) << engine->Log();
}

TEST(ApiAccessTest, NoNonLoopbackListenWithoutTokens) {
  TempDir dir;
  // The topology's query.listen: the error names the file, line, column and field.
  const std::string topology = dir.str() + "/open.yaml";
  std::ofstream(topology) << Substitute(TopologyOnFreePorts(""),
                                        {{"listen: 127.0.0.1:0", "listen: 0.0.0.0:0"}});
  const std::string log = dir.str() + "/run.log";
  Subprocess run({testing::InferscopeBinary(), "run", "--topology", topology, "--state-dir",
                  dir.str() + "/state"},
                 log);
  EXPECT_EQ(run.Wait(), 2) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find(topology + ":35:11: query.listen: '0.0.0.0' is not a loopback "
                                          "address and no API tokens are configured"),
            std::string::npos)
      << ReadFile(log);
  // --listen names itself.
  Subprocess run2({testing::InferscopeBinary(), "run", "--topology", topology, "--state-dir",
                   dir.str() + "/state", "--listen", "[::]:0"},
                  log);
  EXPECT_EQ(run2.Wait(), 2) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find("--listen: '::' is not a loopback address"), std::string::npos)
      << ReadFile(log);
  // The query node likewise.
  std::filesystem::create_directories(dir.str() + "/state");
  Subprocess node({testing::InferscopeBinary(), "query-node", "--state-dir", dir.str() + "/state",
                   "--listen", "0.0.0.0:0"},
                  log);
  EXPECT_EQ(node.Wait(), 2) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find("--listen: '0.0.0.0' is not a loopback address and no API tokens "
                               "are configured (--tokens FILE"),
            std::string::npos)
      << ReadFile(log);
}

}  // namespace
}  // namespace inferscope
