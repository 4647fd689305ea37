// `inferscope query table`: per-instance latency, throughput, errors and the primary bottleneck
// from the query API.

#include <httplib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "pipeline/config.h"

namespace inferscope {
namespace {

using nlohmann::json;

// Where the URL came from, for errors: the ready file, when one was given.
struct Origin {
  std::string url;
  std::string ready_file;
};

// GET `path` and parse JSON; prints why and returns a discarded value on failure.
json Get(httplib::Client& http, const std::string& path, const Origin& origin) {
  auto res = http.Get(path.c_str());
  if (!res) {
    if (res.error() == httplib::Error::Connection) {
      std::fprintf(stderr, "query: nothing listens at %s; is the engine running? ",
                   origin.url.c_str());
      if (!origin.ready_file.empty()) {
        std::fprintf(stderr, "its ready file %s says %s, which may be from an earlier run\n",
                     origin.ready_file.c_str(), origin.url.c_str());
      } else {
        std::fprintf(stderr,
                     "its ready file (run --ready-file F) says where its API listens: pass it "
                     "with --ready-file F, or the URL with --url\n");
      }
    } else {
      std::fprintf(stderr, "query: GET %s%s failed: %s\n", origin.url.c_str(), path.c_str(),
                   httplib::to_string(res.error()).c_str());
    }
    return json(json::value_t::discarded);
  }
  json body = json::parse(res->body, nullptr, false);
  if (res->status != 200) {
    std::fprintf(stderr, "query: GET %s%s: HTTP %d %s\n", origin.url.c_str(), path.c_str(),
                 res->status, res->body.c_str());
    return json(json::value_t::discarded);
  }
  return body;
}

double Number(const json& v) { return v.is_number() ? v.get<double>() : 0.0; }

// One window of `metric` for `instance` (all models merged) over [from_ms, to_ms).
json Window(httplib::Client& http, const Origin& origin, const std::string& instance,
            const std::string& metric, int64_t from_ms, int64_t to_ms) {
  json s = Get(http,
               "/v1/instances/" + instance + "/summary?metric=" + metric +
                   "&window=" + std::to_string(to_ms - from_ms) +
                   "ms&from=" + std::to_string(from_ms) + "&to=" + std::to_string(to_ms),
               origin);
  if (s.is_discarded() || !s.contains("windows") || s["windows"].empty()) return json::object();
  return s["windows"].back();
}

// The span of whole panes an instance has data for, at most `max_ms` long and ending at its last
// whole pane: the first and last panes of a stream are usually partial and would understate rates.
bool WholePanes(const json& instance, int64_t pane_ms, int64_t max_ms, int64_t* from_ms,
                int64_t* to_ms) {
  auto first = instance.value("first_seen", int64_t{0});  // start of the first pane written
  auto last = instance.value("last_seen", int64_t{0});    // latest event time
  *to_ms = last / pane_ms * pane_ms;
  *from_ms = std::max(first + pane_ms, *to_ms - max_ms);
  return *to_ms - *from_ms >= pane_ms;
}

int SeverityRank(const std::string& severity) {
  if (severity == "LOW") return 1;
  if (severity == "MEDIUM") return 2;
  if (severity == "HIGH") return 3;
  if (severity == "CRITICAL") return 4;
  return 0;
}

// The active primary bottleneck of each instance (GET /v1/bottlenecks?primary=true&state=active,
// every page), as "TYPE/SEVERITY"; an instance serving several models shows the most severe of
// its models' primaries. False when the endpoint could not be read.
bool PrimaryBottlenecks(httplib::Client& http, const Origin& origin,
                        std::map<std::string, std::string>* out) {
  std::map<std::string, int> rank;
  for (std::string cursor;;) {
    json page = Get(http,
                    "/v1/bottlenecks?primary=true&state=active&limit=1000" +
                        (cursor.empty() ? "" : "&cursor=" + cursor),
                    origin);
    if (page.is_discarded()) return false;
    for (const json& b : page.value("bottlenecks", json::array())) {
      const std::string instance = b.value("instance", "");
      const std::string severity = b.value("severity", "");
      const int r = SeverityRank(severity);
      auto it = rank.find(instance);
      if (it != rank.end() && it->second >= r) continue;
      rank[instance] = r;
      (*out)[instance] = b.value("type", "") + "/" + severity;
    }
    const json next = page.value("next_cursor", json());
    if (!next.is_string()) break;
    cursor = next.get<std::string>();
  }
  return true;
}

}  // namespace

int QueryTableCommand(const TableArgs& args) {
  Origin origin{args.url, args.ready_file};
  if (!args.ready_file.empty()) {
    std::ifstream f(args.ready_file);
    const json ready = f ? json::parse(f, nullptr, false) : json(json::value_t::discarded);
    if (!ready.is_object() || !ready.contains("http") || !ready["http"].is_string() ||
        ready["http"].get<std::string>().empty()) {
      std::fprintf(stderr,
                   "query: --ready-file %s: %s (expected the JSON `run --ready-file` writes, "
                   "with \"http\": \"http://HOST:PORT\")\n",
                   args.ready_file.c_str(),
                   !f ? "cannot read it (is the engine started? it writes the file once ready)"
                      : "no query API URL in it");
      return 2;
    }
    origin.url = ready["http"].get<std::string>();
  }
  if (origin.url.rfind("http://", 0) != 0 && origin.url.rfind("https://", 0) != 0) {
    std::fprintf(stderr, "query: --url '%s': expected http://HOST:PORT, e.g. %s\n",
                 origin.url.c_str(), "http://127.0.0.1:8080");
    return 2;
  }
  httplib::Client http(origin.url);
  http.set_connection_timeout(5);
  // Every page of /v1/instances (the endpoint is paginated; next_cursor is null on the last page).
  json instances = {{"instances", json::array()}};
  for (std::string cursor;;) {
    json page =
        Get(http, "/v1/instances?limit=1000" + (cursor.empty() ? "" : "&cursor=" + cursor), origin);
    if (page.is_discarded()) return 1;
    for (json& inst : page.value("instances", json::array())) {
      instances["instances"].push_back(std::move(inst));
    }
    const json next = page.value("next_cursor", json());
    if (!next.is_string()) break;
    cursor = next.get<std::string>();
  }
  std::optional<int64_t> pane_ms = ParseDurationMs(args.pane);
  std::optional<int64_t> max_ms = ParseDurationMs(args.window);
  if (!pane_ms || *pane_ms <= 0 || !max_ms || *max_ms < *pane_ms) {
    std::fprintf(stderr, "query: --pane and --window must be durations, window >= pane\n");
    return 2;
  }
  // The bottleneck column is informative: an engine without the classifier (a topology without
  // bottleneck_classify, an older engine) still gets its table, with the column showing "?".
  std::map<std::string, std::string> bottlenecks;
  const bool have_bottlenecks = PrimaryBottlenecks(http, origin, &bottlenecks);
  std::printf(
      "Per instance, all models merged, over its last whole %s panes (at most %s of event time):\n",
      args.pane.c_str(), args.window.c_str());
  std::printf("%-16s %6s %7s %9s %10s %10s %10s %11s %7s  %s\n", "instance", "models", "span s",
              "req/s", "p50 ms", "p95 ms", "p99 ms", "out tok/s", "err %", "bottleneck");
  int rows = 0;
  for (const json& inst : instances.value("instances", json::array())) {
    std::string id = inst.value("id", "");
    int64_t from = 0, to = 0;
    if (!WholePanes(inst, *pane_ms, *max_ms, &from, &to)) continue;
    json ttft = Window(http, origin, id, args.metric, from, to);
    json out = Window(http, origin, id, "output_tokens", from, to);
    if (ttft.empty()) continue;
    double span_s = static_cast<double>(to - from) / 1000.0;
    auto bottleneck = bottlenecks.find(id);
    const std::string shown = !have_bottlenecks                 ? "?"
                              : bottleneck == bottlenecks.end() ? "-"
                                                                : bottleneck->second;
    std::printf("%-16s %6zu %7.0f %9.1f %10.1f %10.1f %10.1f %11.1f %7.2f  %s\n", id.c_str(),
                inst.value("models", json::array()).size(), span_s, Number(ttft["events"]) / span_s,
                Number(ttft["p50"]), Number(ttft["p95"]), Number(ttft["p99"]),
                Number(out["mean"]) * Number(out["rate"]), 100 * Number(ttft["error_ratio"]),
                shown.c_str());
    ++rows;
  }
  if (rows == 0) {
    std::printf("(no whole pane closed yet: panes close once the watermark passes them)\n");
    return 1;
  }
  std::printf(
      "(%s percentiles merged from stored DDSketch panes, 1%% relative accuracy;\n"
      " bottleneck: the active primary bottleneck, GET /v1/bottlenecks?primary=true)\n",
      args.metric.c_str());
  return 0;
}

}  // namespace inferscope
