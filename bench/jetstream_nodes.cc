// Events/s end to end through NATS JetStream with 1 and 2 engine nodes (real `inferscope run`
// subprocesses) over a partitioned stream, against JetStream's own publish and consume rates, and
// the results stream with a query node materialising it, all in the same run (issue 17). The input
// of the node-count model in README.md, "Running more than one engine".
//
// One nats-server (Debian's 2.9, file storage, a child on a port it picks). Each repetition:
//
//   (a)  publish:   E events (256 per message) into a fresh P-partition stream, instances spread
//                   over partitions by FNV-1a (sources/partition.h), one publisher id per
//                   partition; JetStreamPublisher::PublishRaw, acknowledged, 1024 in flight, until
//                   all acked
//   (b1) consume:   one thread, one pull consumer per partition fetched in turn (256, AckAll), as
//                   the engine's source does, until every message
//   (b2) consume:   two threads (own connections) over half the partitions each, in parallel
//   (c)  1 node:    `inferscope run` on all P partitions (jetstream → window_aggregate →
//                   rocksdb_state), from the spawn until its inferscope_window_events_total (events
//                   the window operator applied, read from its /metrics) reaches E
//   (d)  2 nodes:   two `inferscope run` over P/2 partitions each, spawned together, until both
//                   applied their events
//   (e)  2 nodes + results: (d) with a jetstream_results sink on each node and a `query-node
//                   --results` started with them: until both applied their events and the query
//                   node's inferscope_results_feed_position reached the results stream's last
//                   sequence (stable for 300 ms; the time is when it first reached it)
//   (f)  materialise: a fresh query node (own consumer, empty store) on the full results stream of
//                   (e): until its position reaches the last sequence
//
// CPU seconds (clock_getcpuclockid, all threads) of each engine, of nats-server and of the query
// node over each phase, per million events (or results messages), and the load average are
// printed; the events/s ratios are to (a) and (b) of the same repetition. Configurations are
// interleaved (each repetition runs them all in turn). Prints Markdown tables.
//
// Usage: jetstream_nodes [--events N] [--partitions P] [--instances I] [--span-s S] [--reps R]
//                        [--inferscope PATH] [--no-results]

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>
#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_child.h"
#include "clients/cpp/jetstream_publisher.h"
#include "clients/cpp/nats_pull.h"
#include "clients/cpp/publisher.h"

namespace inferscope {
namespace {

using SteadyClock = std::chrono::steady_clock;

double Seconds(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every child started and not yet stopped, so that a failed run leaves none behind.
std::vector<pid_t>& Children() {
  static std::vector<pid_t> children;
  return children;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "jetstream_nodes: %s\n", what.c_str());
  for (pid_t pid : Children()) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  std::exit(2);
}

// A child process: argv[0] executed with stdout and stderr to `log`.
pid_t SpawnLogged(const std::vector<std::string>& argv, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    (void)!freopen(log.c_str(), "w", stdout);
    (void)!freopen(log.c_str(), "a", stderr);
    std::vector<char*> a;
    for (const std::string& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    execv(a[0], a.data());
    _exit(127);
  }
  Children().push_back(pid);
  return pid;
}

void Forget(pid_t pid) {
  auto& c = Children();
  c.erase(std::remove(c.begin(), c.end(), pid), c.end());
}

// SIGTERM, then SIGKILL when it has not exited 10 s later.
void StopChild(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  for (int i = 0; i < 1000; ++i) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) {
      Forget(pid);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::fprintf(stderr, "jetstream_nodes: child %d did not stop on SIGTERM in 10 s: killed\n", pid);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  Forget(pid);
}

// nats-server -js as a child; returns its URL.
std::string StartNats(const std::string& dir, pid_t* pid) {
  std::filesystem::create_directories(dir + "/ports");
  *pid = SpawnLogged({"/usr/sbin/nats-server", "-js", "-sd", dir + "/data", "-a", "127.0.0.1", "-p",
                      "-1", "--ports_file_dir", dir + "/ports"},
                     dir + "/nats.log");
  for (int i = 0; i < 500; ++i) {
    for (const auto& e : std::filesystem::directory_iterator(dir + "/ports")) {
      const std::string text = ReadText(e.path().string());
      const size_t at = text.find("nats://");
      if (at != std::string::npos) return text.substr(at, text.find('"', at) - at);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Die("nats-server did not start (see " + dir + "/nats.log)");
}

// The sum of every sample of `name` (any labels) in a Prometheus text page; -1 when absent.
double MetricSum(const std::string& page, const std::string& name) {
  double sum = -1;
  std::istringstream lines(page);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.compare(0, name.size(), name) != 0 || line.size() <= name.size()) continue;
    const char next = line[name.size()];
    if (next != ' ' && next != '{') continue;
    const size_t space = line.rfind(' ');
    sum = std::max(sum, 0.0) + std::strtod(line.c_str() + space + 1, nullptr);
  }
  return sum;
}

// An `inferscope run` or `inferscope query-node` subprocess with its HTTP API, found through its
// ready file.
struct Process {
  pid_t pid = -1;
  std::string log;
  std::unique_ptr<httplib::Client> http;
  double cpu_at_start = 0;

  bool Ready(const std::string& ready_file) {
    if (http) return true;
    const std::string text = ReadText(ready_file);
    if (text.empty()) return false;
    nlohmann::json info = nlohmann::json::parse(text, nullptr, false);
    if (!info.is_object() || !info.contains("http")) Die("no http in " + ready_file);
    http = std::make_unique<httplib::Client>(info["http"].get<std::string>());
    http->set_read_timeout(5, 0);
    return true;
  }
  // The metric's sum on /metrics; -1 before the API answers.
  double Metric(const std::string& name) const {
    if (!http) return -1;
    auto res = http->Get("/metrics");
    if (!res || res->status != 200) return -1;
    return MetricSum(res->body, name);
  }
  void CheckAlive() const {
    if (Exited()) Die("a child exited; see " + log);
  }
  // True once the process has exited (reaped; pid becomes -1).
  bool Exited() const {
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
      Forget(pid);
      return true;
    }
    return false;
  }
  // Why it failed, for the report: the log's last line, the log kept in the temp directory.
  std::string Failure() const {
    const std::string kept =
        (std::filesystem::temp_directory_path() / std::filesystem::path(log).filename()).string();
    std::error_code ec;
    std::filesystem::copy_file(log, kept, std::filesystem::copy_options::overwrite_existing, ec);
    std::string text = ReadText(log);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return "exited: \"" + text.substr(text.rfind('\n') + 1) + "\" (log: " + kept + ")";
  }
};

struct NodeSpec {
  std::string name;
  std::vector<uint32_t> partitions;
  uint64_t events = 0;  // what its partitions hold
};

constexpr char kNodeTopology[] = R"(name: NAME
state:
  path: STATE
engine:
  checkpoint_interval: 1s
sources:
  - name: ingest
    type: jetstream
    options:
      url: "URL"
      stream: STREAM
      partitions: [PARTS]
      durable: DURABLE
      fetch_batch: 256
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 10s
      out_of_orderness: 30s
      max_publisher_lag: 60s
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

constexpr char kResultsSink[] = R"(  - name: results
    type: jetstream_results
    inputs: [windows]
    options:
      url: "URL"
      stream: RESULTS
      subject_prefix: RESULTS.r
      node: DURABLE
)";

void Replace(std::string& text, const std::string& key, const std::string& value) {
  for (size_t at = text.find(key); at != std::string::npos;
       at = text.find(key, at + value.size())) {
    text.replace(at, key.size(), value);
  }
}

Process StartNode(const std::string& bin, const std::string& dir, const std::string& url,
                  const std::string& stream, const NodeSpec& node, const std::string& durable,
                  const std::string& results_stream) {
  std::string topology = kNodeTopology;
  if (!results_stream.empty()) {
    std::string sink = kResultsSink;
    Replace(sink, "RESULTS", results_stream);
    topology += sink;
  }
  std::string parts;
  for (uint32_t p : node.partitions) parts += (parts.empty() ? "" : ", ") + std::to_string(p);
  Replace(topology, "NAME", durable);
  Replace(topology, "STATE", dir + "/" + durable + "-state");
  Replace(topology, "URL", url);
  Replace(topology, "STREAM", stream);
  Replace(topology, "PARTS", parts);
  Replace(topology, "DURABLE", durable);
  const std::string path = dir + "/" + durable + ".yaml";
  std::ofstream(path) << topology;
  Process p;
  p.log = dir + "/" + durable + ".log";
  p.pid = SpawnLogged({bin, "--log-level", "warn", "run", "--topology", path, "--listen",
                       "127.0.0.1:0", "--ready-file", dir + "/" + durable + ".ready.json"},
                      p.log);
  return p;
}

Process StartQueryNode(const std::string& bin, const std::string& dir, const std::string& url,
                       const std::string& results_stream, const std::string& consumer) {
  Process p;
  p.log = dir + "/" + consumer + ".log";
  p.pid =
      SpawnLogged({bin, "--log-level", "warn", "query-node", "--results", url, "--results-stream",
                   results_stream, "--results-subject-prefix", results_stream + ".r",
                   "--results-consumer", consumer, "--state-dir", dir + "/" + consumer + "-state",
                   "--listen", "127.0.0.1:0", "--ready-file", dir + "/" + consumer + ".ready.json"},
                  p.log);
  return p;
}

// A JetStream context of its own (for stream info and deletes).
struct Js {
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  explicit Js(const std::string& url) {
    if (natsConnection_ConnectTo(&conn, url.c_str()) != NATS_OK ||
        natsConnection_JetStream(&js, conn, nullptr) != NATS_OK) {
      Die("cannot connect to " + url);
    }
  }
  ~Js() {
    jsCtx_Destroy(js);
    natsConnection_Destroy(conn);
  }
  struct Info {
    uint64_t msgs = 0, bytes = 0, last_seq = 0;
  };
  Info StreamInfo(const std::string& stream) const {
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    Info info;
    if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &jerr) == NATS_OK) {
      info = {si->State.Msgs, si->State.Bytes, si->State.LastSeq};
      jsStreamInfo_Destroy(si);
    }
    return info;
  }
  void Delete(const std::string& stream) const {
    jsErrCode jerr = static_cast<jsErrCode>(0);
    js_DeleteStream(js, stream.c_str(), nullptr, &jerr);
  }
};

// (a): every message to its partition (async, acked, 1024 in flight) until all are acknowledged.
double PublishAll(const std::string& url, const std::string& stream,
                  const std::vector<std::pair<uint32_t, std::string>>& messages,
                  uint32_t partitions) {
  client::JetStreamPublisherOptions po;
  po.url = url;
  po.stream = stream;
  po.partitions = partitions;
  po.publisher_id = "bench";
  po.ack_timeout_ms = 60'000;
  client::JetStreamPublisher pub(po);
  if (!pub.Connect()) Die(pub.last_error());
  const auto t0 = SteadyClock::now();
  for (const auto& [partition, payload] : messages) {
    if (!pub.PublishRaw(partition, payload, "")) Die("publish: " + pub.last_error());
  }
  if (!pub.Flush()) Die("publish: " + pub.last_error());
  return Seconds(t0, SteadyClock::now());
}

// (b): one connection, one pull consumer per partition of `partitions`, fetched in turn (256 per
// fetch, AckAll per fetch) until each gave its count of messages (`counts`, by partition); a
// partition done is no longer fetched. Fails the run when a partition stays short.
void ConsumeAll(const std::string& url, const std::string& stream,
                const std::vector<uint32_t>& partitions, const std::vector<uint64_t>& counts,
                const std::string& durable) {
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  if (natsConnection_ConnectTo(&conn, url.c_str()) != NATS_OK ||
      natsConnection_JetStream(&js, conn, nullptr) != NATS_OK) {
    Die("consume: cannot connect");
  }
  struct Consumer {
    natsSubscription* sub = nullptr;
    std::shared_ptr<client::PullFetcher> fetcher;
    uint64_t want = 0, got = 0;
  };
  std::vector<Consumer> consumers;
  for (uint32_t p : partitions) {
    const std::string subject = "inferscope.in." + std::to_string(p);
    const std::string name = durable + "-p" + std::to_string(p);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Config.AckPolicy = js_AckAll;
    so.Config.MaxAckPending = 65536;
    Consumer c;
    c.want = counts[p];
    if (js_PullSubscribe(&c.sub, js, subject.c_str(), name.c_str(), nullptr, &so, nullptr) !=
        NATS_OK) {
      Die("consume: cannot subscribe to " + subject);
    }
    c.fetcher = std::make_shared<client::PullFetcher>();
    if (c.fetcher->Open(conn, stream, name) != NATS_OK) Die("consume: no inbox for " + name);
    consumers.push_back(c);
  }
  for (bool more = true; more;) {
    more = false;
    for (Consumer& c : consumers) {
      if (c.got >= c.want) continue;
      more = true;
      client::PulledMsgs list;
      const natsStatus s = c.fetcher->Fetch(&list, 256, 5000);
      if (s == NATS_TIMEOUT) {
        Die("consume: " + std::to_string(c.got) + " of " + std::to_string(c.want) +
            " messages of a partition");
      }
      if (s != NATS_OK) Die(std::string("consume: ") + natsStatus_GetText(s));
      c.got += static_cast<uint64_t>(list.Count());
      if (list.Count() > 0) {
        natsConnection_PublishString(conn, natsMsg_GetReply(list[list.Count() - 1]), "+ACK");
      }
    }
  }
  for (Consumer& c : consumers) {
    c.fetcher.reset();
    natsSubscription_Unsubscribe(c.sub);
    natsSubscription_Destroy(c.sub);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(conn);
}

// What one phase measured.
struct Phase {
  double seconds = 0;
  double events = 0;
  double engine_cpu = 0;  // all engine processes
  double nats_cpu = 0;
  double other_cpu = 0;  // the query node (e, f); this process (a, b)
  double load1 = 0;      // load average (1 min) at the end
  uint64_t late = 0;     // events the window operators counted late (should be 0)
  std::string failed;    // the query node exited: why (the phase has no figures)
  // (e): the results stream at the end, and when the engines alone were done.
  uint64_t results_msgs = 0, results_bytes = 0;
  double engines_seconds = 0;
  // Per thread name, of the first engine (c, d, e) or the query node (f): where the CPU went.
  std::vector<bench::ThreadStats> threads;
};

std::string ThreadsText(const std::vector<bench::ThreadStats>& threads) {
  std::vector<bench::ThreadStats> sorted = threads;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.cpu_seconds > b.cpu_seconds; });
  std::string text;
  for (size_t i = 0; i < sorted.size() && i < 6; ++i) {
    if (sorted[i].cpu_seconds < 0.05) break;
    char buf[128];
    std::snprintf(buf, sizeof(buf), "%s%s %.2f", text.empty() ? "" : ", ", sorted[i].name.c_str(),
                  sorted[i].cpu_seconds);
    text += buf;
  }
  return text;
}

double Load1() {
  double load = 0;
  std::ifstream("/proc/loadavg") >> load;
  return load;
}

// Runs `nodes` (and, with a results stream, a query node) on the filled stream until each applied
// its events (and the query node caught up); the phase's measurements.
Phase RunNodes(const std::string& bin, const std::string& dir, const std::string& url,
               pid_t nats_pid, const Js& js, const std::string& stream,
               const std::vector<NodeSpec>& nodes, const std::string& tag,
               const std::string& results_stream) {
  Phase phase;
  const double nats0 = bench::ProcessCpuSeconds(nats_pid);
  const auto t0 = SteadyClock::now();
  std::vector<Process> procs;
  for (const NodeSpec& n : nodes) {
    procs.push_back(StartNode(bin, dir, url, stream, n, tag + "-" + n.name, results_stream));
  }
  Process query;
  if (!results_stream.empty()) {
    query = StartQueryNode(bin, dir, url, results_stream, tag + "-query");
  }
  std::vector<bool> done(nodes.size(), false);
  std::vector<double> cpu(nodes.size(), 0);
  double query_cpu = 0;
  uint64_t last_seq = 0;
  auto last_change = SteadyClock::now();
  SteadyClock::time_point caught{};
  bool caught_valid = false;
  SteadyClock::time_point end{};
  SteadyClock::time_point engines_end{};
  double last_position = -1;
  auto last_progress = SteadyClock::now();
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    bool all = true;
    for (size_t i = 0; i < procs.size(); ++i) {
      procs[i].CheckAlive();
      if (done[i]) continue;
      all = false;
      if (!procs[i].Ready(dir + "/" + tag + "-" + nodes[i].name + ".ready.json")) continue;
      const double applied = procs[i].Metric("inferscope_window_events_total");
      if (applied >= static_cast<double>(nodes[i].events)) {
        done[i] = true;
        cpu[i] = bench::ProcessCpuSeconds(procs[i].pid);
        if (i == 0) phase.threads = bench::ThreadStatsOf(procs[i].pid);
        phase.late += static_cast<uint64_t>(
            std::max(0.0, procs[i].Metric("inferscope_window_late_events_total")));
        end = SteadyClock::now();
        engines_end = end;
      }
    }
    if (results_stream.empty()) {
      if (all) break;
      if (Seconds(t0, SteadyClock::now()) > 300) Die(tag + ": engines did not finish in 300 s");
      continue;
    }
    if (query.Exited()) {
      phase.failed = "(e) query node " + query.Failure();
      query.pid = -1;
      break;
    }
    if (!query.Ready(dir + "/" + tag + "-query.ready.json")) continue;
    const uint64_t seq = js.StreamInfo(results_stream).last_seq;
    const auto now = SteadyClock::now();
    if (seq != last_seq) {
      last_seq = seq;
      last_change = now;
      caught_valid = false;
    }
    const double position = query.Metric("inferscope_results_feed_position");
    if (position != last_position) {
      last_position = position;
      last_progress = now;
    } else if (position < static_cast<double>(seq) && Seconds(last_progress, now) > 30) {
      phase.failed = "(e) query node stalled at position " + std::to_string(position) + " of " +
                     std::to_string(seq) + " for 30 s (log: " + query.log + ")";
      StopChild(query.pid);
      query.pid = -1;
      break;
    }
    if (!caught_valid && seq > 0 && position >= static_cast<double>(seq)) {
      caught = now;
      caught_valid = true;
    }
    if (all && caught_valid && Seconds(last_change, now) >= 0.3) {
      end = std::max(end, caught);
      query_cpu = bench::ProcessCpuSeconds(query.pid);
      const Js::Info info = js.StreamInfo(results_stream);
      phase.results_msgs = info.msgs;
      phase.results_bytes = info.bytes;
      break;
    }
    if (Seconds(t0, now) > 300) Die(tag + ": the query node did not catch up in 300 s");
  }
  phase.seconds = Seconds(t0, end);
  phase.engines_seconds = Seconds(t0, engines_end);
  phase.nats_cpu = bench::ProcessCpuSeconds(nats_pid) - nats0;
  for (size_t i = 0; i < procs.size(); ++i) {
    phase.engine_cpu += cpu[i];
    phase.events += static_cast<double>(nodes[i].events);
  }
  phase.other_cpu = query_cpu;
  phase.load1 = Load1();
  for (Process& p : procs) StopChild(p.pid);
  StopChild(query.pid);
  return phase;
}

// (f): a fresh query node on the whole results stream until it applied the last message.
Phase Materialise(const std::string& bin, const std::string& dir, const std::string& url,
                  pid_t nats_pid, const Js& js, const std::string& results_stream,
                  const std::string& tag) {
  Phase phase;
  const Js::Info info = js.StreamInfo(results_stream);
  const double nats0 = bench::ProcessCpuSeconds(nats_pid);
  const auto t0 = SteadyClock::now();
  Process query = StartQueryNode(bin, dir, url, results_stream, tag + "-replay");
  double last_position = -1;
  auto last_progress = SteadyClock::now();
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (query.Exited()) {
      phase.failed = "(f) query node " + query.Failure();
      return phase;
    }
    if (!query.Ready(dir + "/" + tag + "-replay.ready.json")) continue;
    const double position = query.Metric("inferscope_results_feed_position");
    if (position >= static_cast<double>(info.last_seq)) break;
    if (position != last_position) {
      last_position = position;
      last_progress = SteadyClock::now();
    } else if (Seconds(last_progress, SteadyClock::now()) > 30) {
      phase.failed = "(f) query node stalled at position " + std::to_string(position) + " of " +
                     std::to_string(info.last_seq) + " for 30 s (log: " + query.log + ")";
      StopChild(query.pid);
      return phase;
    }
    if (Seconds(t0, SteadyClock::now()) > 300) Die(tag + ": replay did not finish in 300 s");
  }
  phase.seconds = Seconds(t0, SteadyClock::now());
  phase.other_cpu = bench::ProcessCpuSeconds(query.pid);
  phase.threads = bench::ThreadStatsOf(query.pid);
  phase.nats_cpu = bench::ProcessCpuSeconds(nats_pid) - nats0;
  phase.events = static_cast<double>(info.msgs);  // results messages
  phase.results_msgs = info.msgs;
  phase.results_bytes = info.bytes;
  phase.load1 = Load1();
  StopChild(query.pid);
  return phase;
}

struct Row {
  std::string name;
  std::vector<Phase> reps;
};

int Main(int argc, char** argv) {
  uint64_t events = 4'000'000;
  uint32_t partitions = 4;
  int instances = 2000;
  int64_t span_s = 200;  // event time the events cover
  int reps = 3;
  bool results = true;
  std::string bin = INFERSCOPE_BINARY;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--no-results") {
      results = false;
    } else if (arg == "--events" && has_value) {
      events = std::stoull(argv[++i]);
    } else if (arg == "--partitions" && has_value) {
      partitions = static_cast<uint32_t>(std::stoul(argv[++i]));
    } else if (arg == "--instances" && has_value) {
      instances = std::stoi(argv[++i]);
    } else if (arg == "--span-s" && has_value) {
      span_s = std::stoll(argv[++i]);
    } else if (arg == "--reps" && has_value) {
      reps = std::stoi(argv[++i]);
    } else if (arg == "--inferscope" && has_value) {
      bin = argv[++i];
    } else {
      Die("usage: jetstream_nodes [--events N] [--partitions P] [--instances I] [--span-s S] "
          "[--reps R] [--inferscope PATH] [--no-results]");
    }
  }
  if (partitions < 2 || partitions % 2 != 0) Die("--partitions must be even and >= 2");
  if (instances < 1 || reps < 1 || span_s < 1 || events < 256) Die("bad arguments");
  if (!std::filesystem::exists(bin)) Die("no inferscope binary at " + bin + " (--inferscope)");
  constexpr size_t kBatch = 256;

  // The messages, encoded once: event n is a request of instance n % I (model by (n / I) % 2), its
  // partition that of the instance; each partition's events batch into messages of 256 with
  // publisher id bench/p<p>; event times spread over span_s ending a minute ago.
  std::vector<std::pair<uint32_t, std::string>> messages;
  std::vector<uint64_t> partition_events(partitions, 0);
  std::vector<uint64_t> partition_messages(partitions, 0);
  {
    std::vector<std::string> names;
    std::vector<uint32_t> part_of;
    for (int i = 0; i < instances; ++i) {
      names.push_back("gpu-" + std::to_string(i));
      part_of.push_back(client::JetStreamPartition(names.back(), partitions));
    }
    std::vector<std::unique_ptr<client::BatchEncoder>> enc;
    for (uint32_t p = 0; p < partitions; ++p) {
      enc.push_back(std::make_unique<client::BatchEncoder>("bench/p" + std::to_string(p)));
    }
    const int64_t t0 = client::NowMs() - (span_s + 60) * 1000;
    for (uint64_t n = 0; n < events; ++n) {
      const size_t i = n % static_cast<uint64_t>(instances);
      const uint32_t p = part_of[i];
      client::RequestOutcome r;
      r.instance = names[i];
      r.model = (n / static_cast<uint64_t>(instances)) % 2 == 0 ? "llama" : "qwen";
      r.e2e_ms = 100 + static_cast<double>(n % 997);
      r.ttft_ms = 20 + static_cast<double>(n % 89);
      r.output_tokens = static_cast<uint32_t>(n % 500);
      r.time_ms = t0 + static_cast<int64_t>(n * static_cast<uint64_t>(span_s) * 1000 / events);
      enc[p]->AddRequest(r);
      ++partition_events[p];
      if (enc[p]->size() == kBatch) messages.emplace_back(p, std::string(enc[p]->Finish()));
    }
    for (uint32_t p = 0; p < partitions; ++p) {
      if (enc[p]->size() > 0) messages.emplace_back(p, std::string(enc[p]->Finish()));
    }
    for (const auto& m : messages) ++partition_messages[m.first];
  }
  std::vector<uint32_t> all_parts, first_half, second_half;
  uint64_t first_events = 0;
  for (uint32_t p = 0; p < partitions; ++p) {
    all_parts.push_back(p);
    if (p < partitions / 2) {
      first_half.push_back(p);
      first_events += partition_events[p];
    } else {
      second_half.push_back(p);
    }
  }
  const NodeSpec one{"all", all_parts, events};
  const NodeSpec half_a{"a", first_half, first_events};
  const NodeSpec half_b{"b", second_half, events - first_events};
  const uint64_t total_messages = messages.size();

  const std::string dir = bench::TempStateDir("inferscope-jsnodes");
  std::filesystem::create_directories(dir);
  pid_t nats_pid = -1;
  const std::string url = StartNats(dir, &nats_pid);
  const Js js(url);

  Row publish{"(a) JetStream publish, 1 publisher, acked, 1024 in flight", {}};
  Row consume1{"(b1) bare consume, 1 consumer over all partitions", {}};
  Row consume2{"(b2) bare consume, 2 consumers in parallel, half the partitions each", {}};
  Row node1{"(c) 1 engine node, all partitions", {}};
  Row node2{"(d) 2 engine nodes, half the partitions each", {}};
  Row node2r{"(e) 2 engine nodes + results stream + query node caught up", {}};
  Row replay{"(f) query node materialising the results stream of (e) alone", {}};
  uint64_t stream_bytes = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const std::string stream = "IN" + std::to_string(rep);
    const std::string tag = "r" + std::to_string(rep);
    std::string error;
    if (!client::JetStreamPublisher::EnsureStream(url, stream, "inferscope.in", &error)) Die(error);
    {
      Phase ph;
      const double self0 = bench::ProcessCpuSeconds(getpid());
      const double nats0 = bench::ProcessCpuSeconds(nats_pid);
      ph.seconds = PublishAll(url, stream, messages, partitions);
      ph.events = static_cast<double>(events);
      ph.nats_cpu = bench::ProcessCpuSeconds(nats_pid) - nats0;
      ph.other_cpu = bench::ProcessCpuSeconds(getpid()) - self0;
      ph.load1 = Load1();
      publish.reps.push_back(ph);
      stream_bytes = js.StreamInfo(stream).bytes;
    }
    {
      Phase ph;
      const double self0 = bench::ProcessCpuSeconds(getpid());
      const double nats0 = bench::ProcessCpuSeconds(nats_pid);
      const auto t0 = SteadyClock::now();
      ConsumeAll(url, stream, all_parts, partition_messages, tag + "-bare1");
      ph.seconds = Seconds(t0, SteadyClock::now());
      ph.events = static_cast<double>(events);
      ph.nats_cpu = bench::ProcessCpuSeconds(nats_pid) - nats0;
      ph.other_cpu = bench::ProcessCpuSeconds(getpid()) - self0;
      ph.load1 = Load1();
      consume1.reps.push_back(ph);
    }
    {
      Phase ph;
      const double self0 = bench::ProcessCpuSeconds(getpid());
      const double nats0 = bench::ProcessCpuSeconds(nats_pid);
      const auto t0 = SteadyClock::now();
      std::thread other(
          [&] { ConsumeAll(url, stream, second_half, partition_messages, tag + "-bare2b"); });
      ConsumeAll(url, stream, first_half, partition_messages, tag + "-bare2a");
      other.join();
      ph.seconds = Seconds(t0, SteadyClock::now());
      ph.events = static_cast<double>(events);
      ph.nats_cpu = bench::ProcessCpuSeconds(nats_pid) - nats0;
      ph.other_cpu = bench::ProcessCpuSeconds(getpid()) - self0;
      ph.load1 = Load1();
      consume2.reps.push_back(ph);
    }
    node1.reps.push_back(RunNodes(bin, dir, url, nats_pid, js, stream, {one}, tag + "-one", ""));
    node2.reps.push_back(
        RunNodes(bin, dir, url, nats_pid, js, stream, {half_a, half_b}, tag + "-two", ""));
    if (results) {
      const std::string results_stream = "RES" + std::to_string(rep);
      node2r.reps.push_back(RunNodes(bin, dir, url, nats_pid, js, stream, {half_a, half_b},
                                     tag + "-res", results_stream));
      replay.reps.push_back(Materialise(bin, dir, url, nats_pid, js, results_stream, tag));
      js.Delete(results_stream);
    }
    js.Delete(stream);
    // The engines' and query nodes' state of this repetition.
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().filename().string().find("-state") != std::string::npos) {
        std::filesystem::remove_all(e.path());
      }
    }
  }
  StopChild(nats_pid);
  std::filesystem::remove_all(dir);

  // Series: instance x model pairs; panes: the closed 10 s panes of each over span_s.
  const double series =
      static_cast<double>(std::min<uint64_t>(2 * static_cast<uint64_t>(instances), events));
  std::printf(
      "%lu events in %lu messages of up to %zu, %u partitions (FNV-1a of %d instances; %lu / %lu "
      "events per half), %ld s of event time, %.0f series (instance, model); stream %.1f MB "
      "(%.0f bytes per event); one nats-server, file storage; %d repetitions, interleaved\n\n",
      static_cast<unsigned long>(events), static_cast<unsigned long>(total_messages), kBatch,
      partitions, instances, static_cast<unsigned long>(first_events),
      static_cast<unsigned long>(events - first_events), static_cast<long>(span_s), series,
      static_cast<double>(stream_bytes) / 1e6,
      static_cast<double>(stream_bytes) / static_cast<double>(events), reps);
  std::printf(
      "| path | rep | seconds | events/s | / (a) | / (b1) | / (b2) | engine CPU-s per M events | "
      "nats CPU-s per M events | other CPU-s per M events | load (1 min) |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  auto rate = [](const Phase& p) { return p.events / p.seconds; };
  for (const Row* row : {&publish, &consume1, &consume2, &node1, &node2, &node2r}) {
    for (size_t r = 0; r < row->reps.size(); ++r) {
      const Phase& p = row->reps[r];
      const double m = p.events / 1e6;
      if (!p.failed.empty()) {
        std::printf("| %s | %zu | %s |||||||||\n", row->name.c_str(), r + 1, p.failed.c_str());
        continue;
      }
      std::printf("| %s | %zu | %.2f | %.0f | %.2f | %.2f | %.2f | %s | %.3f | %.3f | %.2f |\n",
                  row->name.c_str(), r + 1, p.seconds, rate(p), rate(p) / rate(publish.reps[r]),
                  rate(p) / rate(consume1.reps[r]), rate(p) / rate(consume2.reps[r]),
                  p.engine_cpu > 0 ? std::to_string(p.engine_cpu / m).substr(0, 5).c_str() : "-",
                  p.nats_cpu / m, p.other_cpu / m, p.load1);
    }
  }
  std::printf(
      "\nother CPU: this process (the publisher in (a), the bare consumers in (b)), the query "
      "node in (e). Engine CPU includes its start (RocksDB open, consumer creation).\n");
  for (const Row* row : {&node1, &node2, &node2r}) {
    for (size_t r = 0; r < row->reps.size(); ++r) {
      const Phase& p = row->reps[r];
      if (p.late > 0) {
        std::printf("WARNING: %s rep %zu: %lu events counted late\n", row->name.c_str(), r + 1,
                    static_cast<unsigned long>(p.late));
      }
      if (row == &node2r && p.failed.empty()) {
        std::printf("%s rep %zu: the engines applied every event after %.2f s (%.0f events/s)\n",
                    row->name.c_str(), r + 1, p.engines_seconds, p.events / p.engines_seconds);
      }
      std::printf("%s rep %zu: CPU-s by thread of the first engine: %s\n", row->name.c_str(), r + 1,
                  ThreadsText(p.threads).c_str());
    }
  }
  for (size_t r = 0; r < replay.reps.size(); ++r) {
    std::printf("(f) rep %zu: CPU-s by thread of the query node: %s\n", r + 1,
                ThreadsText(replay.reps[r].threads).c_str());
  }
  if (!replay.reps.empty()) {
    std::printf(
        "\n| results stream (e) | rep | results messages | bytes | messages per M events | "
        "bytes per message | pane messages per series per pane | (f) seconds | (f) messages/s | "
        "(f) query-node CPU-s per M messages | (f) nats CPU-s per M messages | load (1 min) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    const double panes_per_series = static_cast<double>(span_s) / 10.0;
    for (size_t r = 0; r < replay.reps.size(); ++r) {
      const Phase& e = node2r.reps[r];
      const Phase& f = replay.reps[r];
      if (!e.failed.empty() || !f.failed.empty()) {
        std::printf("| 2 nodes | %zu | %s |||||||||||\n", r + 1,
                    (e.failed.empty() ? f.failed : e.failed).c_str());
        continue;
      }
      const double msgs = static_cast<double>(e.results_msgs);
      std::printf(
          "| 2 nodes | %zu | %lu | %lu | %.0f | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.2f "
          "|\n",
          r + 1, static_cast<unsigned long>(e.results_msgs),
          static_cast<unsigned long>(e.results_bytes), msgs / (static_cast<double>(events) / 1e6),
          static_cast<double>(e.results_bytes) / msgs, msgs / (series * panes_per_series),
          f.seconds, rate(f), f.other_cpu / (rate(f) * f.seconds / 1e6),
          f.nats_cpu / (rate(f) * f.seconds / 1e6), f.load1);
    }
  }
  return 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) { return inferscope::Main(argc, argv); }
