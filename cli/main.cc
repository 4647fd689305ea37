// inferscope: a stream-processing engine for LLM-inference fleets. See README.md.

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/logging.h"
#include "cli/version.h"
#include "pipeline/config.h"

namespace {

constexpr const char* kGlobalFooter =
    "Global options (before or after the subcommand):\n"
    "  --log-level LEVEL   trace, debug, info, warn, error, critical, off (default info)\n"
    "  --log-format FMT    text or json (one JSON object per line, for log shippers)\n"
    "  --version           version, git revision, build type and library versions\n";

// A value > 0; the error names the value and the valid range.
CLI::Validator Positive(const std::string& example) {
  return CLI::Validator(
      [example](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v) || !(v > 0) || !std::isfinite(v)) {
          return "must be a number > 0 (e.g. " + example + "), got '" + s + "'";
        }
        return {};
      },
      "NUMBER > 0");
}

// A count that cannot be negative (CLI::NonNegativeNumber's message prints DBL_MAX in full).
CLI::Validator NonNegative() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        int64_t v = 0;
        if (!CLI::detail::lexical_cast(s, v) || v < 0) {
          return "must be a whole number >= 0, got '" + s + "'";
        }
        return {};
      },
      "INTEGER >= 0");
}

// replay --speed: 0 (no pacing) or a finite number of at least 0.001 (a thousand times slower
// than recorded); NaN passed CLI::NonNegativeNumber and paced nothing, 1e-12 waited for ages.
CLI::Validator ReplaySpeed() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v) || !std::isfinite(v) || !(v == 0 || v >= 0.001)) {
          return "must be 0 (no pacing) or a number >= 0.001, got '" + s + "'";
        }
        return {};
      },
      "0 or NUMBER >= 0.001");
}

// A duration such as 500ms, 30s, 1m (ParseDurationMs); `allow_zero` accepts 0 ("off").
CLI::Validator Duration(bool allow_zero) {
  return CLI::Validator(
      [allow_zero](std::string& s) -> std::string {
        std::optional<int64_t> ms = inferscope::ParseDurationMs(s);
        if (!ms || *ms < 0 || (*ms == 0 && !allow_zero)) {
          return std::string("expected a duration such as 500ms, 30s or 1m") +
                 (allow_zero ? " (0: off)" : "") + ", got '" + s + "'";
        }
        return {};
      },
      "DURATION");
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// For a parse error: when the deepest subcommand given takes subcommands and the first word it
// did not understand is not an option, an error naming that word, the closest subcommand and
// the list. Empty otherwise.
std::string SubcommandHint(CLI::App& app) {
  CLI::App* cur = &app;
  std::string path = "inferscope";
  for (;;) {
    std::vector<CLI::App*> parsed = cur->get_subcommands();
    if (parsed.empty()) break;
    cur = parsed.front();
    path += " " + cur->get_name();
  }
  std::vector<CLI::App*> subs = cur->get_subcommands([](CLI::App*) { return true; });
  if (subs.empty()) return {};
  // Words nobody took, wherever they fell through to.
  std::vector<std::string> left = app.remaining(true);
  std::string word;
  for (const std::string& w : left) {
    if (!w.empty() && w[0] != '-') {
      word = w;
      break;
    }
  }
  std::string names, best;
  size_t best_distance = SIZE_MAX;
  for (CLI::App* s : subs) {
    names += (names.empty() ? "" : ", ") + s->get_name();
    const size_t d = EditDistance(word, s->get_name());
    if (d < best_distance) {
      best_distance = d;
      best = s->get_name();
    }
  }
  if (word.empty()) return path + ": a subcommand is required: " + names;
  std::string out = path + ": unknown subcommand '" + word + "'";
  if (best_distance <= std::max<size_t>(2, best.size() / 3))
    out += "; did you mean '" + best + "'?";
  return out + " (subcommands: " + names + ")";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "inferscope: event-time windowed metrics, alerts and anomaly detection, bottleneck "
      "classification, routing weights and optimization workflows for LLM-inference fleets"};
  app.require_subcommand(1);
  // Global options are accepted after the subcommand too (inherited by every subcommand below).
  app.fallthrough();
  app.set_version_flag("--version", inferscope::VersionText(),
                       "Print the version, git revision, build type and library versions");
  std::string log_level = "info";
  std::string log_format = "text";
  app.add_option("--log-level", log_level, std::string(inferscope::kLogLevels))
      ->capture_default_str();
  app.add_option("--log-format", log_format,
                 "text, or json: one JSON object per line (for log shippers)")
      ->capture_default_str();

  inferscope::RunArgs run;
  run.topology = "topologies/inference-fleet.yaml";
  CLI::App* run_cmd = app.add_subcommand("run", "Run the engine on a topology");
  run_cmd->add_option("-t,--topology", run.topology, "Topology file")->capture_default_str();
  run_cmd->add_option("--state-dir", run.state_dir, "RocksDB directory (overrides state.path)");
  run_cmd->add_option("--listen", run.listen,
                      "host:port of the query API (overrides query.listen)");
  run_cmd->add_option("--ready-file", run.ready_file, "Write endpoints as JSON here once ready");
  run_cmd->add_option("--duration", run.duration_s, "Seconds to run; 0 = until SIGINT/SIGTERM");
  run_cmd->add_option("--metrics-max-publishers", run.metrics_max_publishers,
                      "Distinct publisher label values per metric family; the rest are "
                      "reported as publisher=\"_other\" (default 256)");
  run_cmd
      ->add_option("--status-interval", run.status_interval,
                   "Log one status line this often (events/s in and out, rejections, watermark "
                   "lag, queue depths, checkpoint age); 0: off")
      ->capture_default_str()
      ->check(Duration(true));
  run_cmd
      ->add_option("--publisher-idle", run.publisher_idle,
                   "Log a publisher as idle after this long without a message")
      ->capture_default_str()
      ->check(Duration(false));

  inferscope::NodeArgs node;
  CLI::App* node_cmd = app.add_subcommand(
      "node",
      "Run one node of a cluster: the topology's partitions as slots claimed through leases in a "
      "JetStream key-value bucket, each slot's checkpoints on a JetStream changelog, so a live "
      "node takes over a dead one's slots (README, \"Running more than one engine\")");
  node_cmd->add_option("-t,--topology", node.topology, "Topology file (with a jetstream source)")
      ->required();
  node_cmd->add_option("--cluster", node.cluster, "Cluster file: node, slots, leases, changelog")
      ->required();
  node_cmd->add_option("--state-dir", node.state_dir,
                       "Directory of the slots' stores, <dir>/slots/<slot> (overrides state.path)");
  node_cmd->add_option("--listen", node.listen,
                       "host:port of the node's /v1/health and /metrics (port 0: any free one)");
  node_cmd->add_option("--ready-file", node.ready_file, "Write {node, http} as JSON here once up");
  node_cmd->add_option("--duration", node.duration_s, "Seconds to run; 0 = until SIGINT/SIGTERM");

  inferscope::QueryNodeArgs qn;
  CLI::App* qn_cmd = app.add_subcommand(
      "query-node",
      "Serve the query API from an engine's state directory, as a separate read-only process "
      "(a RocksDB secondary instance that catches up with the engine every --catch-up-interval; "
      "writes to silences and workflows answer 405 naming the engine's API)");
  qn_cmd
      ->add_option("--state-dir", qn.state_dir,
                   "The engine's state directory; with --results, the node's own store (created "
                   "when missing)")
      ->required();
  qn_cmd->add_option("--results", qn.results,
                     "Materialise the results stream of every engine node (their "
                     "jetstream_results sinks) from these NATS server(s) into a store of this "
                     "node's own in --state-dir, instead of reading one engine's directory");
  qn_cmd->add_option("--results-stream", qn.results_stream, "The results stream (with --results)")
      ->capture_default_str();
  qn_cmd
      ->add_option("--results-subject-prefix", qn.results_subject_prefix,
                   "The sinks' subject_prefix: the node reads <prefix>.* (with --results)")
      ->capture_default_str();
  qn_cmd
      ->add_option("--results-consumer", qn.results_consumer,
                   "This node's durable consumer, one per query node (with --results)")
      ->capture_default_str();
  qn_cmd
      ->add_option("--maintenance-interval", qn.maintenance_interval,
                   "How often rollups and retention run on the node's store (with --results)")
      ->capture_default_str();
  qn_cmd->add_option("--listen", qn.listen, "host:port of the query API (port 0: any free port)")
      ->capture_default_str();
  qn_cmd
      ->add_option("--catch-up-interval", qn.catch_up_interval,
                   "How often to catch up with the engine's committed state (10ms..1h)")
      ->capture_default_str();
  qn_cmd->add_option("--secondary-path", qn.secondary_path,
                     "This node's own RocksDB files, one directory per query node (default: a "
                     "temporary directory, removed at exit)");
  qn_cmd->add_option("--engine-url", qn.engine_url,
                     "The engine's query API, named in the 405 answers to writes");
  qn_cmd->add_option("-t,--topology", qn.topology,
                     "Topology whose state.tiers apply when the store holds no tier list "
                     "(written by an older engine); with --results, the node's tiers (give the "
                     "engines' topology)");
  qn_cmd->add_option("--tokens", qn.tokens,
                     "API token file: lines 'NAME SCOPES TOKEN' (scopes read,write,admin); "
                     "needed to listen on a non-loopback address");
  qn_cmd->add_option("--rate-limit", qn.rate_limit,
                     "Requests per second per token (per address without one); 0 = no limit");
  qn_cmd->add_option("--rate-burst", qn.rate_burst, "Token bucket size (default: the rate)");
  qn_cmd->add_option("--cors-origin", qn.cors_origins,
                     "An origin allowed cross-origin requests (repeatable; \"*\" = any)");
  qn_cmd->add_option("--ready-file", qn.ready_file,
                     "Write {http, state, secondary} here once ready");
  qn_cmd->add_option("--duration", qn.duration_s, "Seconds to run; 0 = until SIGINT/SIGTERM");

  std::vector<std::string> check_paths;
  CLI::App* check_cmd = app.add_subcommand(
      "check-topology",
      "Validate topology files (errors name file:line:column and the field; exit 1 if any is bad)");
  check_cmd->add_option("files", check_paths, "Topology files")->required();

  inferscope::SimulateArgs sim;
  std::string gauge_interval = "1s";
  CLI::App* sim_cmd = app.add_subcommand(
      "simulate",
      "Publish a simulated inference fleet (the serving model of sim/, Poisson arrivals or a "
      "replayed Azure trace); progress on stderr at a terminal");
  sim_cmd->add_option("-e,--endpoint", sim.endpoint, "Engine ingest endpoint (PUSH connects)")
      ->capture_default_str();
  sim_cmd->add_option("--publisher-id", sim.publisher_id, "Publisher id")->capture_default_str();
  sim_cmd->add_option("--instances", sim.instances, "Inference instances")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  sim_cmd->add_option("--models", sim.models, "Models per instance")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  sim_cmd
      ->add_option("--rate", sim.rate,
                   "Poisson arrivals per second of simulated time, whole fleet (without --trace)")
      ->capture_default_str()
      ->check(Positive("30"));
  sim_cmd->add_option("--wander", sim.wander, "How much the Poisson load wanders (0 = constant)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  sim_cmd
      ->add_option("--prompt-median", sim.prompt_median, "Median prompt tokens (without --trace)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 8192.0));
  sim_cmd
      ->add_option("--output-median", sim.output_median, "Median output tokens (without --trace)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1024.0));
  sim_cmd->add_option("--trace", sim.trace,
                      "Replay an Azure-format trace (TIMESTAMP,ContextTokens,GeneratedTokens) "
                      "instead of Poisson arrivals");
  sim_cmd->add_option("--speed", sim.speed, "Simulated seconds per wall second")
      ->capture_default_str()
      ->check(Positive("20"));
  sim_cmd->add_option("--warmup", sim.warmup_s,
                      "Simulated seconds computed before publishing, so the first panes show a "
                      "steady fleet (default 60, 0 with --trace); fault times count from its end");
  sim_cmd
      ->add_option("--duration", sim.duration_s,
                   "Wall seconds; 0 = forever (or to the trace's end)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sim_cmd->add_option("--gauge-interval", gauge_interval, "Gauge period (simulated), e.g. 1s")
      ->capture_default_str()
      ->check(Duration(false));
  sim_cmd->add_option("--batch-size", sim.batch_size, "Events per message")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  sim_cmd->add_option("--seed", sim.seed, "Random seed")->capture_default_str();
  sim_cmd->add_option("--fault", sim.faults,
                      "kind:instance:START-END[:factor], repeatable; kinds kv_cache_small, "
                      "slot_limit_low, slow_gpu, prefix_cache_off, error_burst, load_double "
                      "(e.g. slow_gpu:vllm-0:60s-180s:3)");
  sim_cmd->add_option("--timeout", sim.timeout_s, "Seconds before a request fails with timeout")
      ->capture_default_str()
      ->check(Positive("120"));
  sim_cmd->add_option("--router", sim.router, "round_robin or random")
      ->capture_default_str()
      ->check(CLI::IsMember({"round_robin", "random"}));
  sim_cmd->add_option("--spike-instance", sim.spike_instance,
                      "Slow this instance's GPU (a slow_gpu fault)");
  sim_cmd->add_option("--spike-start", sim.spike_start_s,
                      "Spike start, simulated seconds after start");
  sim_cmd->add_option("--spike-duration", sim.spike_duration_s, "Spike length in seconds");
  sim_cmd->add_option("--spike-factor", sim.spike_factor, "Step and prefill time multiplier")
      ->capture_default_str()
      ->check(Positive("10"));
  sim_cmd->add_option("--curve-key", sim.curve_key,
                      "CurveZMQ: this publisher's secret key file (keygen NAME.key)");
  sim_cmd->add_option("--curve-server-key", sim.curve_server_key,
                      "CurveZMQ: the source's public key file (NAME.pub)");
  sim_cmd->add_flag("--no-progress", sim.no_progress,
                    "No progress line on stderr (it is shown only at a terminal anyway)");

  inferscope::TableArgs table;
  CLI::App* query_cmd = app.add_subcommand("query", "Read from a running engine's query API");
  query_cmd->require_subcommand(1);
  CLI::App* table_cmd = query_cmd->add_subcommand(
      "table", "Per-instance latency, throughput, errors and the primary bottleneck");
  auto* url_opt =
      table_cmd->add_option("--url", table.url, "Query API base URL")->capture_default_str();
  table_cmd
      ->add_option("--ready-file", table.ready_file,
                   "Take the URL from the ready file `run --ready-file` wrote (its \"http\")")
      ->excludes(url_opt);
  table_cmd->add_option("--window", table.window, "At most this much event time, e.g. 1m")
      ->capture_default_str();
  table_cmd->add_option("--pane", table.pane, "The topology's pane length")->capture_default_str();
  table_cmd->add_option("--metric", table.metric, "Latency metric")->capture_default_str();

  inferscope::ReportArgs report;
  CLI::App* report_cmd =
      app.add_subcommand("report", "Print a report from the query API (Markdown, CSV or JSON)");
  report_cmd->require_subcommand(1);
  CLI::App* comparison_cmd = report_cmd->add_subcommand(
      "comparison", "Instances or models side by side; the better value marked per metric");
  CLI::App* trend_cmd = report_cmd->add_subcommand(
      "trend", "The last window against the one `period` earlier, with change and significance");
  for (CLI::App* cmd : {comparison_cmd, trend_cmd}) {
    cmd->add_option("--url", report.url, "Query API base URL")->capture_default_str();
    cmd->add_option("--token", report.token, "Bearer token, when the API requires one");
    cmd->add_option("--format", report.format, "markdown, csv or json")->capture_default_str();
    cmd->add_option("--window", report.window, "Length of the span(s) read (default 5m)");
    cmd->add_option("--to", report.to, "End of the (current) span (default: the watermark)");
  }
  auto* instances_opt = comparison_cmd->add_option("--instances", report.instances,
                                                   "Comma-separated instances to compare");
  comparison_cmd
      ->add_option("--models", report.models, "Comma-separated models to compare (instead)")
      ->excludes(instances_opt);
  trend_cmd->add_option("--instance", report.instance, "The instance (all its models)");
  trend_cmd->add_option("--model", report.model,
                        "The model (all its instances; or with --instance)");
  trend_cmd->add_option("--period", report.period,
                        "How far back the previous span ends (default: the window; 1d: a day ago)");
  trend_cmd->add_option("--alpha", report.alpha, "Significance level (default 0.05)");

  inferscope::TailArgs tail;
  CLI::App* tail_cmd = app.add_subcommand(
      "tail",
      "Print alerts from the alert stream, one per line (a start-up line and warnings on stderr)");
  tail_cmd->add_option("-e,--endpoint", tail.endpoint, "Alert stream endpoint (zmq_alerts sink)")
      ->capture_default_str();
  tail_cmd->add_option("--topic", tail.topic, "Topic prefix, e.g. alerts.critical.")
      ->capture_default_str();
  tail_cmd->add_option("--severity", tail.severity, "Only this severity (builds the topic prefix)");
  tail_cmd->add_option("--instance", tail.instance, "Only this instance (needs --severity)");
  tail_cmd->add_option("--model", tail.model, "Only this model (needs --instance)");
  tail_cmd->add_flag("--json", tail.json, "Print each alert as one JSON object per line");
  tail_cmd->add_flag("--wide", tail.wide,
                     "Every field on the line (rule, fingerprint, message); default: a short line "
                     "cut to the terminal's width");
  tail_cmd
      ->add_option(
          "--quiet-warning", tail.quiet_warning,
          "Warn on stderr when nothing was heard from the endpoint for this long; 0: never")
      ->capture_default_str()
      ->check(Duration(true));
  tail_cmd->add_option("--curve-key", tail.curve_key,
                       "CurveZMQ: this subscriber's secret key file (keygen NAME.key)");
  tail_cmd->add_option("--curve-server-key", tail.curve_server_key,
                       "CurveZMQ: the stream's public key file (NAME.pub)");

  inferscope::KeygenArgs keygen;
  CLI::App* keygen_cmd = app.add_subcommand(
      "keygen", "Write a CurveZMQ key pair: NAME.key (secret, mode 0600) and NAME.pub");
  keygen_cmd->add_option("-o,--out", keygen.out, "NAME: the files' path without extension")
      ->required();
  keygen_cmd->add_flag("--force", keygen.force, "Overwrite existing files");

  inferscope::ReplayArgs replay;
  CLI::App* replay_cmd = app.add_subcommand(
      "replay",
      "Send a recorded stream to an engine at recorded speed, --speed N times faster or as fast "
      "as possible (--speed 0), to reproduce an incident; progress on stderr at a terminal. The "
      "input is a recording of `inferscope record` (each message sent byte for byte, with its "
      "publisher id, sequence number and event times; a corrupt record stops the replay with its "
      "offset) or a CSV of request outcomes with a header line, columns in any order: time "
      "(epoch seconds or ISO 8601), instance, model; optional (an empty cell = absent) e2e_ms, "
      "ttft_ms, tpot_ms, prompt_tokens, output_tokens, cached_tokens, error, cost_usd, quality");
  replay_cmd->add_option("-i,--input", replay.input, "Recording or CSV file")->required();
  replay_cmd
      ->add_option("--format", replay.format,
                   "auto (a recording when the file starts with its magic ISRECORD, else CSV), "
                   "csv or recording")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "csv", "recording"}));
  replay_cmd->add_option("-e,--endpoint", replay.endpoint, "Engine ingest endpoint (PUSH connects)")
      ->capture_default_str();
  replay_cmd->add_option("--publisher-id", replay.publisher_id, "Publisher id (CSV)")
      ->capture_default_str();
  replay_cmd
      ->add_option("--speed", replay.speed,
                   "Recorded seconds per wall second (at least 0.001); 0 = no pacing")
      ->capture_default_str()
      ->check(ReplaySpeed());
  replay_cmd->add_flag("--keep-times", replay.keep_times,
                       "CSV: send the recorded event times (default: the replay's start plus each "
                       "row's offset, so windows fill now); a recording always keeps them");
  replay_cmd->add_option("--batch-size", replay.batch_size, "Events per message (CSV)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  replay_cmd->add_flag("--no-progress", replay.no_progress,
                       "No progress line on stderr (it is shown only at a terminal anyway)");

  inferscope::BridgeArgs bridge;
  CLI::App* bridge_cmd = app.add_subcommand(
      "bridge",
      "Forward protocol messages from a bound ZeroMQ PULL socket (where PUSH publishers send) into "
      "a NATS JetStream stream for the jetstream source: each message whole, to partition "
      "FNV-1a(publisher id) mod --partitions, acknowledged publishes, bounded in flight; until "
      "SIGINT/SIGTERM or --duration");
  bridge_cmd
      ->add_option("--zmq-bind", bridge.zmq_bind,
                   "PULL socket binds here (tcp://127.0.0.1:* picks a free port)")
      ->required();
  bridge_cmd
      ->add_option("--nats", bridge.nats_url,
                   "NATS server URL (nats://127.0.0.1:4222), or a cluster's URLs comma-separated")
      ->required();
  bridge_cmd->add_option("--stream", bridge.stream, "The JetStream stream")->required();
  bridge_cmd
      ->add_option("--subject-prefix", bridge.subject_prefix, "Partition p is subject PREFIX.p")
      ->capture_default_str();
  bridge_cmd->add_option("--partitions", bridge.partitions, "The stream's partition count")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  bridge_cmd
      ->add_option("--max-in-flight", bridge.max_in_flight,
                   "Publishes not yet acknowledged by the stream")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  bridge_cmd->add_option("--rcvhwm", bridge.rcvhwm, "ZeroMQ receive high-water mark, messages")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000000));
  bridge_cmd->add_flag("--create-stream", bridge.create_stream,
                       "Create the stream (file storage, subjects PREFIX.*) when it is missing");
  bridge_cmd
      ->add_option("--replicas", bridge.replicas,
                   "With --create-stream: the stream's replicas (3 on a 3-server cluster); an "
                   "existing stream with other replicas is an error")
      ->capture_default_str()
      ->check(CLI::Range(1, 5));
  bridge_cmd->add_option("--ready-file", bridge.ready_file,
                         "Write {\"endpoint\": ...} here once bound and connected");
  bridge_cmd->add_option("--duration", bridge.duration_s, "Seconds to run; 0 = until stopped")
      ->capture_default_str();

  inferscope::RecordArgs record;
  CLI::App* record_cmd = app.add_subcommand(
      "record",
      "Record protocol messages, each byte for byte with its arrival time, into a file that "
      "`replay` sends on: --connect subscribes to publishers' PUB socket (beside the engine's sub "
      "source), --bind takes PUSH publishers in the engine's place; until SIGINT/SIGTERM or "
      "--duration");
  record_cmd->add_option("--connect", record.connect,
                         "SUB socket connects here: a publisher's bound PUB endpoint");
  record_cmd->add_option("--bind", record.bind,
                         "PULL socket binds here (tcp://127.0.0.1:* picks a free port): "
                         "publishers PUSH-connect to it");
  record_cmd->add_option("--socket", record.socket,
                         "pull or sub (default: sub with --connect, pull with --bind)");
  record_cmd->add_option("--topic", record.topics,
                         "SUB: a topic prefix to record (repeatable; default every message)");
  record_cmd->add_option("-o,--output", record.output, "The recording file")->required();
  record_cmd->add_flag("--force", record.force, "Overwrite an existing output file");
  record_cmd->add_option("--duration", record.duration_s, "Seconds to record; 0 = until stopped")
      ->capture_default_str();
  record_cmd->add_option("--rcvhwm", record.rcvhwm, "ZeroMQ receive high-water mark, messages")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000000));
  record_cmd->add_option("--ready-file", record.ready_file,
                         "Write {\"endpoint\": ...} here once the socket is bound or connected");

  inferscope::DetectArgs detect;
  CLI::App* detect_cmd = app.add_subcommand(
      "detect",
      "Run the anomaly detectors over a timestamp,value CSV (exit 0; 1 when some lines were bad: "
      "each is reported with its line number and skipped, the rest is scored; lines are at "
      "most 1 MiB; 2 on usage or I/O errors, and when the output is the input file)");
  detect_cmd->add_option("-i,--input", detect.input, "CSV file, or - for stdin")->required();
  detect_cmd->add_option("-o,--output", detect.output, "CSV file, or - for stdout")
      ->capture_default_str();
  auto* season_opt =
      detect_cmd->add_option("--season", detect.season_points, "Seasonal period in points")
          ->check(NonNegative());
  detect_cmd
      ->add_option("--season-period", detect.season_period, "Seasonal period in time, e.g. 1d")
      ->excludes(season_opt);
  detect_cmd->add_option("--config", detect.config, "YAML file of detector options");
  detect_cmd
      ->add_option("--warmup", detect.warmup_points, "Points before any verdict (>= 2; default 30)")
      ->check(NonNegative());

  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    sub->footer(kGlobalFooter);
    for (CLI::App* subsub : sub->get_subcommands([](CLI::App*) { return true; })) {
      subsub->footer(kGlobalFooter);
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    const std::string hint = SubcommandHint(app);
    if (!hint.empty() && (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr ||
                          dynamic_cast<const CLI::ExtrasError*>(&e) != nullptr)) {
      std::fprintf(stderr, "%s\nRun with --help for more information.\n", hint.c_str());
      return 2;
    }
    return app.exit(e);
  }
  inferscope::LogToStderr();
  if (inferscope::Status st = inferscope::ConfigureLogging(log_level, log_format); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.message().c_str());
    return 2;
  }

  if (*run_cmd) return inferscope::RunCommand(run);
  if (*qn_cmd) return inferscope::QueryNodeCommand(qn);
  if (*node_cmd) return inferscope::NodeCommand(node);
  if (*check_cmd) return inferscope::CheckTopologyCommand(check_paths);
  if (*sim_cmd) {
    sim.gauge_interval_ms = *inferscope::ParseDurationMs(gauge_interval);  // checked above
    return inferscope::SimulateCommand(sim);
  }
  if (*table_cmd) return inferscope::QueryTableCommand(table);
  if (*comparison_cmd) return inferscope::ReportCommand("comparison", report);
  if (*trend_cmd) return inferscope::ReportCommand("trend", report);
  if (*tail_cmd) return inferscope::TailCommand(tail);
  if (*detect_cmd) return inferscope::DetectCommand(detect);
  if (*replay_cmd) return inferscope::ReplayCommand(replay);
  if (*record_cmd) return inferscope::RecordCommand(record);
  if (*bridge_cmd) return inferscope::BridgeCommand(bridge);
  if (*keygen_cmd) return inferscope::KeygenCommand(keygen);
  return 0;
}
