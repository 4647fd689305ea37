#pragma once

#include <signal.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace inferscope {

// The `inferscope` subcommands. Each returns the process exit code.

struct RunArgs {
  std::string topology;                 // topology file
  std::string state_dir;                // overrides state.path
  std::string listen;                   // overrides query.listen
  std::string ready_file;               // written (JSON) once every stage is open
  double duration_s = 0;                // 0 = until SIGINT/SIGTERM
  size_t metrics_max_publishers = 0;    // publisher label values per metric family; 0 = default
  std::string status_interval = "60s";  // one status line this often; 0: off (cli/status_log.h)
  std::string publisher_idle = "60s";   // a publisher is logged idle after this long silent
};
int RunCommand(const RunArgs& args);

// Blocks until one of `signals` (blocked by the caller) arrives or, when `duration_s` > 0, that
// many seconds have passed: how `run`, `node` and `query-node` wait before stopping.
void WaitForStop(const sigset_t& signals, double duration_s);

// `inferscope node`: one node of a cluster that runs a topology's partitions as slots, claimed
// through leases, with their checkpoints on a JetStream changelog (cli/node.h). Exit code 0 after
// SIGINT/SIGTERM (or `duration_s`), 1 when it cannot start, 2 on bad options or files.
struct NodeArgs {
  std::string topology;    // the topology every slot runs (its jetstream source's partitions are
                           // replaced by the slot's)
  std::string cluster;     // the cluster file (cli/node.h: ClusterSpec)
  std::string state_dir;   // overrides state.path: slots live in <state>/slots/<slot>
  std::string listen;      // host:port of the node's health and metrics API; empty: none
  std::string ready_file;  // written (JSON: node, http) once the node runs
  double duration_s = 0;   // 0 = until SIGINT/SIGTERM
};
int NodeCommand(const NodeArgs& args);

// Validates each file (builds its stages, binds nothing); prints "FILE: OK" or the error naming
// file:line:column and the field. Exit code 0 when every file is valid, 1 otherwise. Progress on
// stderr at a terminal when there are many files.
int CheckTopologyCommand(const std::vector<std::string>& paths);

// `inferscope query-node`: the query API as its own process, reading the engine's state directory
// as a RocksDB secondary instance (cli/query_node.h). Exit code 0 after SIGINT/SIGTERM (or
// `duration_s`), 1 when it cannot start (no state directory, address in use), 2 on bad options.
struct QueryNodeArgs {
  std::string state_dir;                  // the engine's state directory; required
  std::string listen = "127.0.0.1:8081";  // host:port of the HTTP API (port 0: any free one)
  std::string catch_up_interval = "500ms";
  std::string secondary_path;  // this node's own RocksDB files; empty: a temporary directory
  std::string engine_url;      // named in the 405 answers to writes
  // Tiers for a store that holds no tier list (older engines), and its `query` section's tokens,
  // limits, CORS and export settings.
  std::string topology;
  // A token file (query/access.h: LoadTokenFile); its tokens are added to the topology's.
  std::string tokens;
  double rate_limit = -1;  // requests/s per client; -1: the topology's (default: no limit)
  double rate_burst = -1;  // bucket size; -1: the topology's
  // Origins allowed cross-origin requests; replace the topology's query.cors.allowed_origins.
  std::vector<std::string> cors_origins;
  std::string ready_file;  // written (JSON: http, state, secondary) once serving
  double duration_s = 0;   // 0 = until SIGINT/SIGTERM
  // The results mode (cli/results_feed.h): NATS URL(s) of the results stream; empty: off.
  std::string results;
  std::string results_stream = "INFERSCOPE_RESULTS";
  std::string results_subject_prefix = "inferscope.results";
  std::string results_consumer = "inferscope-query";
  std::string maintenance_interval = "10s";
};
int QueryNodeCommand(const QueryNodeArgs& args);

// `inferscope simulate`: the serving model of sim/ (sim/README.md) over a fleet of instances,
// published through the C++ client. Simulated time runs `speed` times faster than the wall clock;
// event times are the start's wall-clock time + simulated time. Exit code 0, 1 when events were
// dropped or the endpoint is unusable, 2 on bad options (faults, trace lines: file:line).
struct SimulateArgs {
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::string publisher_id = "simulator";
  int instances = 4;
  int models = 2;
  double rate = 30;            // Poisson arrivals per second of simulated time, whole fleet
  double wander = 0.05;        // the load wanders (PoissonOptions::wander); 0 = constant
  double prompt_median = 600;  // Poisson arrivals' token counts: lognormal medians
  double output_median = 180;
  std::string trace;  // replay this Azure-format trace instead of Poisson arrivals
  double speed = 1;   // simulated seconds per wall second
  // Simulated seconds run before publishing (faults count from its end); < 0: 60 without a
  // trace, 0 with one.
  double warmup_s = -1;
  double duration_s = 30;            // wall seconds; 0 = forever (with --trace: until its end)
  int64_t gauge_interval_ms = 1000;  // simulated time
  int batch_size = 256;
  uint64_t seed = 42;
  std::vector<std::string> faults;     // kind:instance:START-END[:factor] (sim/faults.h)
  double timeout_s = 120;              // a request older than this fails with `timeout`
  std::string router = "round_robin";  // or random
  // The old latency spike, now a slow_gpu fault: on this instance ...
  std::string spike_instance;
  double spike_start_s = -1;     // ... from this many simulated seconds after start ...
  double spike_duration_s = 0;   // ... for this long ...
  double spike_factor = 10;      // ... step and prefill times x this
  std::string curve_key;         // CurveZMQ: this publisher's secret key file (keygen's NAME.key)
  std::string curve_server_key;  // CurveZMQ: the engine source's public key file (NAME.pub)
  bool no_progress = false;      // no progress line (shown only when stderr is a terminal)
};
int SimulateCommand(const SimulateArgs& args);

// `inferscope replay`: sends a recorded stream to an engine's ingest endpoint (a PULL source; the
// replay's PUSH socket connects), paced by the recorded times at `speed` (0: as fast as possible).
// Two inputs, told apart by the file's first bytes or `format`:
// - a recording of `inferscope record` (cli/recording.h): each message is sent byte for byte as it
//   was recorded (topic, publisher id, sequence number, event times), spaced by the arrival times.
//   A torn or corrupt record stops the replay there: an error naming its offset, nothing after
//   it is sent (exit code 2).
// - a CSV of request outcomes (header: time, instance, model required; e2e_ms, ttft_ms, tpot_ms,
//   prompt_tokens, output_tokens, cached_tokens, error, cost_usd, quality optional, an empty cell
//   = absent; time as epoch seconds or ISO 8601; no quoting), sent through the C++ client. Event
//   times are the replay's start plus each row's offset (so windows fill now), or the recorded
//   times with `keep_times`. Malformed rows are reported with their line and skipped.
// Progress on stderr at a terminal. Exit code 0; 1 when the endpoint is unusable or messages were
// dropped; 2 on a missing or unreadable file, a missing CSV header, or a bad recording.
struct ReplayArgs {
  std::string input;
  std::string format = "auto";  // auto (a recording when the file starts with its magic) | csv |
                                // recording
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::string publisher_id = "replay";  // CSV only (a recording keeps its publishers' ids)
  double speed = 1;
  bool keep_times = false;  // CSV only (a recording always keeps its event times)
  int batch_size = 256;     // CSV only
  bool no_progress = false;
};
int ReplayCommand(const ReplayArgs& args);

// `inferscope record`: receives protocol messages (docs/PROTOCOL.md) and appends each, byte for
// byte with its arrival time, to a recording file (cli/recording.h) that `replay` sends on.
// `connect` subscribes (SUB) to publishers' PUB socket, beside the engine's own sub source;
// `bind` takes PUSH publishers (PULL) in the engine's place; `socket` overrides either default.
// Runs until SIGINT/SIGTERM or `duration_s`; the file is flushed when the socket is idle (at least
// every second) and fsynced at the end. Exit code 0, 2 on bad options (not exactly one of
// connect/bind, a malformed endpoint, an output file that exists or cannot be created), 1 when
// the socket or the file fails.
struct RecordArgs {
  std::string connect;              // SUB connects here (a publisher's bound PUB)
  std::string bind;                 // PULL binds here (publishers PUSH-connect)
  std::string socket;               // pull | sub; empty: sub with connect, pull with bind
  std::vector<std::string> topics;  // sub: topic prefixes (default: everything)
  std::string output;               // the recording file; required
  bool force = false;               // overwrite an existing output file
  double duration_s = 0;            // 0 = until SIGINT/SIGTERM
  int rcvhwm = 100000;              // ZMQ_RCVHWM in messages
  std::string ready_file;           // written ({"endpoint": ...}, the bound port read back)
};
int RecordCommand(const RecordArgs& args);

// `inferscope bridge`: forwards protocol-v1 messages received on a bound ZeroMQ PULL socket (the
// engine's default ingest) into a NATS JetStream stream, for publishers that cannot change; each
// message whole, to partition FNV-1a(publisher id) mod `partitions`, with acknowledged publishes at
// most `max_in_flight` unacknowledged (beyond that the bridge stops reading the socket, so ZeroMQ
// back-pressures the publishers). Built with INFERSCOPE_JETSTREAM only. Exit code 0 after
// SIGINT/SIGTERM (or `duration_s`) with every publish acknowledged, 1 on a failure, 2 on bad
// options.
struct BridgeArgs {
  std::string zmq_bind;                          // PULL binds here; tcp://127.0.0.1:* picks a port
  std::string nats_url;                          // required, nats://host:port
  std::string stream;                            // required
  std::string subject_prefix = "inferscope.in";  // partition p is "<prefix>.<p>"
  int partitions = 1;                            // the stream's partition count
  int max_in_flight = 1024;                      // unacknowledged publishes
  int rcvhwm = 1000;                             // ZMQ_RCVHWM in messages
  bool create_stream = false;  // create the stream (file storage, "<prefix>.*") when missing
  int replicas = 1;            // --create-stream: the stream's replicas (3 on a 3-server cluster)
  std::string ready_file;      // written ({"endpoint": ...}) once bound and connected
  double duration_s = 0;       // 0 = until SIGINT/SIGTERM
};
int BridgeCommand(const BridgeArgs& args);

struct TableArgs {
  std::string url = "http://127.0.0.1:8080";
  std::string ready_file;      // when set, the URL is its "http" (what `run --ready-file` wrote)
  std::string window = "60s";  // at most this much event time, in whole panes
  std::string pane = "10s";    // the topology's pane length
  std::string metric = "ttft_ms";
};
int QueryTableCommand(const TableArgs& args);

// `inferscope report comparison|trend`: GET /v1/reports/<kind> with these parameters (empty ones
// left out) and print the answer (query/report_handlers.cc). Exit code 0, 1 when the API cannot
// be reached or answers an error (its message on stderr).
struct ReportArgs {
  std::string url = "http://127.0.0.1:8080";
  std::string token;                // bearer token, when the API requires one
  std::string format = "markdown";  // markdown | csv | json
  std::string instances, models;    // comparison: comma-separated names (one of the two)
  std::string instance, model;      // trend: the subject (one or both)
  std::string window, period, to, alpha;
};
int ReportCommand(const std::string& kind, const ReportArgs& args);

struct TailArgs {
  std::string endpoint = "tcp://127.0.0.1:5557";  // the zmq_alerts sink
  std::string topic = "alerts.";                  // subscription prefix
  // Alternatively the prefix built from names (escaped as docs/PROTOCOL.md, "Topics", says):
  // severity, then optionally instance, then optionally model. Override `topic` when set.
  std::string severity, instance, model;
  bool json = false;  // one JSON object per line
  bool wide = false;  // every field; default a short line within the terminal's width
  std::string quiet_warning = "60s";  // warn when nothing was heard for this long; 0: never
  std::string curve_key;         // CurveZMQ: this subscriber's secret key file (keygen's NAME.key)
  std::string curve_server_key;  // CurveZMQ: the stream's public key file (NAME.pub)
};
// Prints one line per alert until SIGINT/SIGTERM, after a start-up line on stderr saying what it
// subscribed to. Exit code 0, 2 on bad options (an endpoint not of the form tcp://HOST:PORT,
// ipc://PATH or inproc://NAME), 1 when the socket fails.
int TailCommand(const TailArgs& args);

// `inferscope detect`: the streaming detectors over a `timestamp,value` CSV (backtesting).
// Exit code 0, 1 when some lines were bad (each reported on stderr with its line number and
// skipped), 2 on usage, option or I/O errors.
struct DetectArgs {
  std::string input;           // CSV file or "-" (stdin)
  std::string output = "-";    // CSV file or "-" (stdout)
  int64_t season_points = 0;   // period in points (0 = none, unless the config sets one)
  std::string season_period;   // period in time, e.g. "1d" (buckets: season_points or 48)
  std::string config;          // YAML mapping of DetectorOptions fields
  int64_t warmup_points = -1;  // points before any verdict (-1: the config's or 30; >= 2)
};
int DetectCommand(const DetectArgs& args);

// `inferscope keygen`: writes a new CurveZMQ key pair to NAME.key (the secret key, mode 0600) and
// NAME.pub (the public key) and prints the public key. Exit code 0, 1 on failure (a file exists
// without --force, I/O errors, libzmq without CURVE).
struct KeygenArgs {
  std::string out;     // NAME: the files' path without extension
  bool force = false;  // overwrite existing files
};
int KeygenCommand(const KeygenArgs& args);

}  // namespace inferscope
