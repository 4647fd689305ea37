#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/changelog.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"

typedef struct __natsConnection natsConnection;
typedef struct __jsCtx jsCtx;

namespace httplib {
class Server;
}

namespace inferscope {

class Engine;
class LeaseTable;
class LeaseClock;

// A cluster file (`inferscope node --cluster FILE`):
//
//   node: node-a                       # this node's name, unique in the cluster
//   url: nats://127.0.0.1:4222         # NATS server(s), comma-separated
//   slots: {a: [0, 1], b: [2, 3]}      # every slot of the cluster: name -> partitions
//   prefer: [a]                        # the slots this node claims first
//   leases: {bucket: INFERSCOPE_LEASES, ttl: 5s, replicas: 1}
//   changelog: {stream: INFERSCOPE_CKPT, subject_prefix: inferscope.ckpt, replicas: 1,
//               chunk_bytes: 262144, snapshot_every: 100}
struct ClusterSpec {
  std::string file;
  std::string node;
  std::string url;
  std::vector<std::pair<std::string, std::vector<uint32_t>>> slots;  // file order
  std::set<std::string> prefer;
  std::string lease_bucket = "INFERSCOPE_LEASES";
  int64_t lease_ttl_ms = 5000;  // >= 1 s; renewed every ttl/3
  int lease_replicas = 1;
  ChangelogOptions changelog;

  // Reads and checks a cluster file; errors name the file, line and field.
  static Result<ClusterSpec> Load(const std::string& path);
};

// ClusterNode runs the slots this node holds, each as its own Engine built from the same topology
// (state in <state>/slots/<slot>, the jetstream source's partitions the slot's, its durable
// consumers "<durable>-<slot>-p<p>", the jetstream_results sink's node the slot's name, no query
// API of its own), and keeps their leases.
//
// Leases (cluster/leases.h): a lease thread ticks every ttl/3. A held slot is renewed by a CAS on
// the revision the node holds; when the CAS loses (someone took the slot), or no renewal has
// succeeded for a whole ttl counted from before the last one was sent, the slot's engine is
// abandoned at once (Engine::Abandon: no last checkpoint, no flush, no final upload) — fencing. A
// slot not held is claimed when its lease is released, or has not changed for its ttl on this
// node's clock (LeaseClock); an absent lease is claimed at once for a preferred slot and after a
// ttl otherwise (the preferred node gets a head start). Claiming always restores the slot from its
// changelog (cluster/changelog.h) into a wiped local directory — a local copy may be older than
// what another node uploaded — on a thread of its own (the lease thread keeps renewing; a start
// that fails, say on a server that does not answer yet, is tried again while the lease is held). A
// changelog append refused (the writer is fenced: someone else appended) also abandons the slot,
// and the node stops renewing its lease.
//
// Lifecycle: Start → (lease thread) → Stop: graceful: every held slot's engine stops (its last
// checkpoint uploaded, the queue drained) and its lease is released, so another node claims it at
// once. Concurrency: Start/Stop/Health from the control thread and the HTTP thread; slots change
// on the lease thread only (under mu_).
class ClusterNode {
 public:
  ClusterNode(ClusterSpec spec, std::string topology_path, std::string state_dir);
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Checks the topology (one jetstream source), connects, creates the lease bucket and the
  // changelog stream when absent, starts the lease thread and (with `listen`) the HTTP API.
  Status Start(const std::string& listen);
  void Stop();
  // {"status", "role": "node", "node", "slots": {name: {state, ...}}}
  nlohmann::json Health() const;
  // "http://127.0.0.1:PORT", empty without an API.
  std::string HttpUrl() const;

 private:
  struct Slot;
  void LeaseLoop();
  void Tick();
  void Claim(Slot& slot, uint64_t revision, const std::string& previous);
  // Restores and starts `slot` on its starter thread (StartSlot); Tick joins it when done.
  void LaunchStart(Slot& slot);
  // Restores and starts `slot` (its starter thread).
  Status StartSlot(Slot& slot);
  // Abandons (`graceful` false) or stops the slot's engine; lease thread, mu_ not held.
  void StopSlot(Slot& slot, bool graceful, const std::string& why);
  Result<std::string> SlotTopologyCheck() const;
  int64_t NowMs() const;

  const ClusterSpec spec_;
  const std::string topology_path_;
  std::string state_dir_;
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;        // changelog uploads and restores (5 s request timeout)
  jsCtx* lease_js_ = nullptr;  // lease reads and writes: ttl/4 request timeout, so that one
                               // request to a dead server cannot hold the lease thread past a ttl
  std::unique_ptr<LeaseTable> leases_;
  std::unique_ptr<LeaseClock> clock_;
  std::vector<std::unique_ptr<Slot>> slots_;
  MetricsRegistry metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  int http_port_ = 0;
  std::string http_host_;
};

}  // namespace inferscope
