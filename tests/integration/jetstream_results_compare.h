#pragma once

// What the results-stream integration tests share (jetstream_results_test.cc,
// jetstream_takeover_test.cc): the engine nodes' topology with the results sink, query nodes as
// subprocesses, and the comparison of a results query node's answers with one engine's.

#include <gtest/gtest.h>
#include <httplib.h>
#include <nats/nats.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope::jetstream_test {

using nlohmann::json;
using testing::EngineProcess;
using testing::ReadFile;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

// jetstream_seeded.h's engine (1 s panes, only data moves watermarks) plus a threshold rule that
// fires and resolves on the seeded latencies (e2e p95 of a 1 s pane above 3.9 s), and, on the
// nodes, the results sink.
inline constexpr char kResultsTopology[] = R"(name: NAME
state:
  path: STATE
  tiers:
    - {resolution: 1s, retention: forever}
engine:
  checkpoint_interval: 100ms
sources:
  - name: ingest
    type: jetstream
    options:
      url: URL
      stream: IN
      subject_prefix: inferscope.in
      partitions: PARTS
      durable: DURABLE
      fetch_batch: 2
      fetch_wait: 20ms
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
      out_of_orderness: 5s
      idle_timeout: 0
      max_publisher_lag: 5m
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: slow_e2e
          metric: e2e_ms
          stat: p95
          op: ">"
          levels: {warning: 3900}
          keep_firing_for: 2s
          min_count: 5
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: alert_store
    type: rocksdb_alerts
    inputs: [rules]
RESULTS)";

inline constexpr char kResultsSink[] = R"(  - name: results
    type: jetstream_results
    inputs: [windows, rules]
    options:
      url: URL
      stream: RES
      subject_prefix: res
      node: DURABLE
)";

inline std::string Topology(const std::string& name, const std::string& state,
                            const std::string& url, const std::string& parts,
                            const std::string& durable, bool results) {
  const std::string sink =
      results ? Substitute(kResultsSink, {{"URL", url}, {"DURABLE", durable}}) : "";
  return Substitute(kResultsTopology, {{"NAME", name},
                                       {"STATE", state},
                                       {"URL", url},
                                       {"PARTS", parts},
                                       {"RESULTS", sink},
                                       {"DURABLE", durable}});
}

inline std::unique_ptr<EngineProcess> StartNode(const TempDir& dir, const std::string& url,
                                                const std::string& name, const std::string& parts,
                                                const std::string& durable, bool results) {
  return std::make_unique<EngineProcess>(
      dir, EngineProcess::Options{
               Topology(name, dir.str() + "/" + durable + "-state", url, parts, durable, results),
               name});
}

// An `inferscope` subcommand as a subprocess that writes a ready file with its "http" URL
// (`query-node`, `node`): the binary, `command`, then --listen 127.0.0.1:0 --ready-file FILE.
class ReadyFileProcess {
 public:
  ReadyFileProcess(const TempDir& dir, const std::string& name, std::vector<std::string> command) {
    ready_ = dir.str() + "/" + name + ".ready.json";
    log_ = dir.str() + "/" + name + ".log";
    std::vector<std::string> argv = {testing::InferscopeBinary()};
    argv.insert(argv.end(), command.begin(), command.end());
    argv.insert(argv.end(), {"--listen", "127.0.0.1:0", "--ready-file", ready_});
    process_ = std::make_unique<Subprocess>(argv, log_);
  }
  [[nodiscard]] bool WaitReady() {
    if (!WaitFor([&] { return !ReadFile(ready_).empty() || !process_->Running(); })) return false;
    json info = json::parse(ReadFile(ready_), nullptr, false);
    if (!info.is_object() || !info.contains("http")) return false;
    http_ = std::make_unique<httplib::Client>(info["http"].get<std::string>());
    return process_->Running();
  }
  httplib::Client& http() { return *http_; }
  std::string Log() const { return ReadFile(log_); }
  Subprocess& process() { return *process_; }

 private:
  std::string ready_;
  std::string log_;
  std::unique_ptr<Subprocess> process_;
  std::unique_ptr<httplib::Client> http_;
};

// `inferscope query-node` as a subprocess: on an engine's directory (`args` empty) or in the
// results mode (`args` has --results ...).
class QueryNodeProcess : public ReadyFileProcess {
 public:
  QueryNodeProcess(const TempDir& dir, const std::string& name, std::vector<std::string> args)
      : ReadyFileProcess(dir, name, WithCommand("query-node", std::move(args))) {}

 private:
  static std::vector<std::string> WithCommand(std::string command, std::vector<std::string> args) {
    args.insert(args.begin(), std::move(command));
    return args;
  }
};

// Drops what differs between two stores of the same results by construction: the time of the
// answer and of its data (`as_of`, watermarks), and the wall-clock detection times of alerts.
inline void Scrub(json& j) {
  if (j.is_object()) {
    for (const char* key : {"timestamp", "as_of", "as_of_ms", "watermark_ms", "detected_at",
                            "detected_at_ms", "updated_at", "freshness"}) {
      j.erase(key);
    }
    for (auto& [key, value] : j.items()) Scrub(value);
  } else if (j.is_array()) {
    for (json& v : j) Scrub(v);
  }
}

inline json Get(httplib::Client& http, const std::string& path, int* status) {
  auto res = http.Get(path);
  if (!res) return json("no answer");
  *status = res->status;
  json body = json::parse(res->body, nullptr, false);
  Scrub(body);
  // Alerts are listed by detection (wall-clock) time, which differs between the runs.
  if (body.is_object() && body.contains("alerts") && body["alerts"].is_array()) {
    std::sort(body["alerts"].begin(), body["alerts"].end(), [](const json& a, const json& b) {
      return a.value("fingerprint", "") < b.value("fingerprint", "");
    });
  }
  return body;
}

// The compared reads, over a fixed range of the stream's event time.
inline std::vector<std::string> ComparedPaths(int64_t t0,
                                              const std::vector<std::string>& instances) {
  const int64_t from = t0 / 60'000 * 60'000;
  const std::string range =
      "&from=" + std::to_string(from) + "&to=" + std::to_string(from + 300'000);
  return {"/v1/instances?limit=1000",
          "/v1/instances/" + instances[0] + "/summary?metric=e2e_ms&window=1m" + range,
          "/v1/instances/" + instances[3] + "/summary?metric=ttft_ms&window=10s" + range,
          "/v1/instances/" + instances[6] + "/summary?metric=kv_cache_usage&window=1m" + range,
          "/v1/series?instance=" + instances[5] + "&metric=e2e_ms&step=1s" + range,
          "/v1/series?instance=" + instances[2] + "&model=llama&metric=ttft_ms&step=10s" + range,
          "/v1/performance/metrics?" + range.substr(1),
          "/v1/alerts?limit=1000"};
}

// For a failure report: the 1 s series of two metrics of every instance (which panes differ).
inline std::vector<std::string> DiagnosticPaths(int64_t t0,
                                                const std::vector<std::string>& instances) {
  const int64_t from = t0 / 60'000 * 60'000;
  const std::string range =
      "&from=" + std::to_string(from) + "&to=" + std::to_string(from + 300'000);
  std::vector<std::string> out;
  for (const std::string& instance : instances) {
    for (const char* metric : {"kv_cache_usage", "e2e_ms"}) {
      out.push_back("/v1/series?instance=" + instance + "&metric=" + metric + "&step=1s" + range);
    }
  }
  return out;
}

// Equal JSON, floating-point numbers within a relative 1e-12: a mean merged from the same panes
// in another order (the fleet rollup adds each node's panes as they arrive) may differ in its last
// digits.
inline bool Alike(const json& a, const json& b) {
  if (a.is_number_float() || b.is_number_float()) {
    if (!a.is_number() || !b.is_number()) return false;
    const double x = a.get<double>(), y = b.get<double>();
    return x == y || std::abs(x - y) <= 1e-12 * std::max(std::abs(x), std::abs(y));
  }
  if (a.type() != b.type() || a.size() != b.size()) return false;
  if (a.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!b.contains(it.key()) || !Alike(it.value(), b[it.key()])) return false;
    }
    return true;
  }
  if (a.is_array()) {
    for (size_t i = 0; i < a.size(); ++i) {
      if (!Alike(a[i], b[i])) return false;
    }
    return true;
  }
  return a == b;
}

// The leaves where `a` and `b` differ (Alike), as "path: a vs b" lines, at most `limit`.
inline void DiffLeaves(const json& a, const json& b, const std::string& path, size_t limit,
                       std::vector<std::string>* out) {
  if (out->size() >= limit) return;
  if (a.is_structured() && a.type() == b.type()) {
    if (a.is_object()) {
      for (auto it = a.begin(); it != a.end(); ++it) {
        DiffLeaves(it.value(), b.contains(it.key()) ? b[it.key()] : json(), path + "." + it.key(),
                   limit, out);
      }
      for (auto it = b.begin(); it != b.end(); ++it) {
        if (!a.contains(it.key()))
          DiffLeaves(json(), it.value(), path + "." + it.key(), limit, out);
      }
    } else {
      for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
        DiffLeaves(i < a.size() ? a[i] : json(), i < b.size() ? b[i] : json(),
                   path + "[" + std::to_string(i) + "]", limit, out);
      }
    }
    return;
  }
  if (!Alike(a, b)) out->push_back(path + ": " + a.dump() + " vs " + b.dump());
}

// Whether every path answers 200 with alike JSON on both (waiting up to 60 s for `got` to catch
// up). When not, `why` names every path that differs, each with the first differing leaves.
inline bool SameAnswers(httplib::Client& want, httplib::Client& got,
                        const std::vector<std::string>& paths, std::string* why) {
  if (WaitFor(
          [&] {
            for (const std::string& path : paths) {
              int want_status = 0, got_status = 0;
              json a = Get(want, path, &want_status);
              json b = Get(got, path, &got_status);
              if (want_status != 200 || got_status != 200 || !Alike(a, b)) return false;
            }
            return true;
          },
          std::chrono::seconds(60))) {
    return true;
  }
  why->clear();
  for (const std::string& path : paths) {
    int want_status = 0, got_status = 0;
    json a = Get(want, path, &want_status);
    json b = Get(got, path, &got_status);
    if (want_status == 200 && got_status == 200 && Alike(a, b)) continue;
    *why += path + ": want " + std::to_string(want_status) + ", got " + std::to_string(got_status) +
            "\n";
    std::vector<std::string> leaves;
    DiffLeaves(a, b, "", 40, &leaves);
    for (const std::string& leaf : leaves) *why += "  " + leaf + "\n";
  }
  return false;
}

// A JetStream context on `url` (a server or a comma-separated list) for the scope; `js` is null
// when the connection failed.
struct JsConnection {
  explicit JsConnection(const std::string& url) {
    if (natsConnection_ConnectTo(&conn, url.c_str()) != NATS_OK ||
        natsConnection_JetStream(&js, conn, nullptr) != NATS_OK) {
      js = nullptr;
    }
  }
  JsConnection(const JsConnection&) = delete;
  JsConnection& operator=(const JsConnection&) = delete;
  ~JsConnection() {
    if (js != nullptr) jsCtx_Destroy(js);
    if (conn != nullptr) natsConnection_Destroy(conn);
  }
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
};

// One partition consumer of the input stream IN, as the server reports it.
struct PartitionConsumer {
  uint64_t delivered = 0;    // stream sequence last delivered
  uint64_t pending = 0;      // not delivered yet
  uint64_t ack_pending = 0;  // delivered, not acknowledged (its checkpoint not durable)
  uint64_t ack_floor = 0;    // stream sequence acknowledged
  uint64_t opt_start = 0;    // the start sequence it was created with (0: from the first)
  int64_t created_ms = 0;    // when it was created (the server's wall clock)
};

// `durable`'s consumers "<durable>-p<p>" of `partitions`, in order; nullopt for one that cannot
// be read (or for every one without a connection).
inline std::vector<std::optional<PartitionConsumer>> ReadPartitionConsumers(
    jsCtx* js, const std::string& durable, const std::vector<uint32_t>& partitions) {
  std::vector<std::optional<PartitionConsumer>> out(partitions.size());
  for (size_t i = 0; i < partitions.size() && js != nullptr; ++i) {
    jsConsumerInfo* ci = nullptr;
    const std::string name = durable + "-p" + std::to_string(partitions[i]);
    if (js_GetConsumerInfo(&ci, js, "IN", name.c_str(), nullptr, nullptr) != NATS_OK) continue;
    out[i] = PartitionConsumer{ci->Delivered.Stream,
                               ci->NumPending,
                               static_cast<uint64_t>(ci->NumAckPending),
                               ci->AckFloor.Stream,
                               ci->Config != nullptr ? ci->Config->OptStartSeq : 0,
                               ci->Created / 1'000'000};
    jsConsumerInfo_Destroy(ci);
  }
  return out;
}

// Every message of the input stream applied by `durable`'s consumers and its checkpoint durable.
inline bool AllAckedBy(const std::string& url, const std::string& durable,
                       const std::vector<uint32_t>& partitions) {
  JsConnection c(url);
  if (c.js == nullptr) return false;
  for (const std::optional<PartitionConsumer>& p :
       ReadPartitionConsumers(c.js, durable, partitions)) {
    if (!p || p->pending != 0 || p->ack_pending != 0 || p->ack_floor == 0) return false;
  }
  return true;
}

// The stream sequence last delivered to each of `durable`'s partition consumers (0 when one
// cannot be read).
inline std::vector<uint64_t> DeliveredTo(const std::string& url, const std::string& durable,
                                         const std::vector<uint32_t>& partitions) {
  JsConnection c(url);
  std::vector<uint64_t> out;
  for (const std::optional<PartitionConsumer>& p :
       ReadPartitionConsumers(c.js, durable, partitions)) {
    out.push_back(p ? p->delivered : 0);
  }
  return out;
}

// Calls `kill` as soon as `durable`'s consumers show work in flight: a message delivered past
// `delivered_before` (DeliveredTo before the chunk was published) while some message is not yet
// acknowledged (its checkpoint is not durable). Polls every millisecond on one connection, so the
// kill follows the observation by far less than a checkpoint interval (a fixed sleep before the
// kill missed the window on a loaded machine: the node had applied and acknowledged the whole
// chunk). Returns whether work was in flight; false (after killing all the same) when every
// message was acknowledged before it was seen, or nothing was seen within 30 s.
inline bool KillWithWorkInFlight(const std::string& url, const std::string& durable,
                                 const std::vector<uint32_t>& partitions,
                                 const std::vector<uint64_t>& delivered_before,
                                 const std::function<void()>& kill) {
  JsConnection c(url);
  bool in_flight = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (c.js != nullptr && std::chrono::steady_clock::now() < deadline) {
    const std::vector<std::optional<PartitionConsumer>> consumers =
        ReadPartitionConsumers(c.js, durable, partitions);
    bool read = true, progressed = false;
    uint64_t outstanding = 0;
    for (size_t i = 0; i < consumers.size(); ++i) {
      if (!consumers[i]) {
        read = false;
        break;
      }
      progressed = progressed || consumers[i]->delivered > delivered_before[i];
      outstanding += consumers[i]->pending + consumers[i]->ack_pending;
    }
    if (read && progressed) {
      in_flight = outstanding > 0;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  kill();
  return in_flight;
}

}  // namespace inferscope::jetstream_test
