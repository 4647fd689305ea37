#include "cli/node.h"

#include <nats/nats.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "cli/builtins.h"
#include "cli/commands.h"
#include "cli/engine.h"
#include "clients/cpp/nats_connect.h"
#include "cluster/leases.h"
#include "pipeline/address.h"
#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/json_text.h"
#include "pipeline/thread_name.h"
#include "pipeline/topology.h"
#include "pipeline/yaml_file.h"
#include "state/state_store.h"

namespace inferscope {

enum class SlotState { kIdle, kStarting, kRunning };

const char* SlotStateName(SlotState s) {
  switch (s) {
    case SlotState::kIdle:
      return "idle";
    case SlotState::kStarting:
      return "starting";
    case SlotState::kRunning:
      return "running";
  }
  return "?";
}

struct ClusterNode::Slot {
  std::string name;
  std::vector<uint32_t> partitions;
  bool preferred = false;
  SlotState state = SlotState::kIdle;  // guarded by mu_
  uint64_t revision = 0;               // of the lease held (lease thread)
  int64_t renewed_sent_ms = 0;         // monotonic: when the last successful write was sent
  std::thread starter;
  std::atomic<bool> start_done{false};
  Status start_status;
  std::atomic<bool> fenced{false};
  std::unique_ptr<Engine> engine;           // running (after the starter is joined)
  std::unique_ptr<ChangelogWriter> writer;  // its changelog
  // Reported (guarded by mu_).
  std::string owner_seen;
  uint64_t claims = 0;
  uint64_t takeovers = 0;  // claims of a lease another node held
  uint64_t losses = 0;
  uint64_t start_failures = 0;  // starts (restore included) that failed and were tried again
  std::string last_loss;
  double restore_ms = 0;
  int64_t started_at_ms = 0;  // wall clock: when the slot's current start began (its restore)
  ChangelogRestore restore;
  Counter* renewals = nullptr;
  Counter* renew_failures = nullptr;
  Gauge* held = nullptr;
};

Result<ClusterSpec> ClusterSpec::Load(const std::string& path) {
  Result<YAML::Node> loaded = LoadYamlFile(path, "cluster file");
  if (!loaded.ok()) return loaded.status();
  const YAML::Node doc = *loaded;
  if (!doc.IsMap()) return Status::InvalidArgument(path + ": expected a mapping");
  ConfigNode root(path, doc, "");
  INFERSCOPE_RETURN_IF_ERROR(
      root.CheckKnownFields({"node", "url", "slots", "prefer", "leases", "changelog"}));
  ClusterSpec spec;
  spec.file = path;
  Result<std::string> node = root.GetString("node");
  if (!node.ok()) return node.status();
  spec.node = *node;
  if (spec.node.empty() || spec.node.size() > 255) return root.Error("node", "1..255 bytes");
  Result<std::string> url = root.GetString("url");
  if (!url.ok()) return url.status();
  spec.url = *url;
  std::vector<std::string> servers;
  std::string url_error;
  if (!client::SplitNatsUrls(spec.url, &servers, &url_error)) return root.Error("url", url_error);
  const YAML::Node slots = doc["slots"];
  if (!slots || !slots.IsMap() || slots.size() == 0) {
    return root.Error("slots", "required: a mapping of slot name to partitions, {a: [0, 1]}");
  }
  std::set<uint32_t> all;
  for (const auto& entry : slots) {
    if (!entry.first.IsScalar()) return root.Error("slots", "a slot name must be a string");
    const std::string name = entry.first.as<std::string>();
    if (name.empty() || name.find_first_of(".*> \t/\\") != std::string::npos) {
      return root.Error("slots", "slot '" + name + "': a name without '.', '*', '>' or spaces");
    }
    if (!entry.second.IsSequence() || entry.second.size() == 0) {
      return root.Error("slots", "slot '" + name + "': expected a list of partitions");
    }
    std::vector<uint32_t> parts;
    for (const YAML::Node& p : entry.second) {
      int64_t v = -1;
      try {
        v = p.as<int64_t>();
      } catch (const YAML::Exception&) {
        v = -1;
      }
      if (v < 0 || v > 65535) {
        return root.Error("slots", "slot '" + name + "': partitions are numbers 0..65535");
      }
      if (!all.insert(static_cast<uint32_t>(v)).second) {
        return root.Error("slots", "partition " + std::to_string(v) + " is in two slots");
      }
      parts.push_back(static_cast<uint32_t>(v));
    }
    spec.slots.emplace_back(name, std::move(parts));
  }
  if (const YAML::Node prefer = doc["prefer"]) {
    if (!prefer.IsSequence()) return root.Error("prefer", "expected a list of slot names");
    for (const YAML::Node& p : prefer) {
      if (!p.IsScalar()) return root.Error("prefer", "expected a list of slot names");
      const std::string name = p.as<std::string>();
      bool known = false;
      for (const auto& s : spec.slots) known = known || s.first == name;
      if (!known) return root.Error("prefer", "'" + name + "' is not a slot");
      spec.prefer.insert(name);
    }
  }
  Result<ConfigNode> leases = root.Child("leases");
  if (!leases.ok()) return leases.status();
  INFERSCOPE_RETURN_IF_ERROR(leases->CheckKnownFields({"bucket", "ttl", "replicas"}));
  Result<std::string> bucket = leases->GetString("bucket", spec.lease_bucket);
  if (!bucket.ok()) return bucket.status();
  spec.lease_bucket = *bucket;
  Result<int64_t> ttl = leases->GetDurationMs("ttl", spec.lease_ttl_ms, 1000);
  if (!ttl.ok()) return ttl.status();
  spec.lease_ttl_ms = *ttl;
  Result<int64_t> lr = leases->GetInt("replicas", spec.lease_replicas, 1, 5);
  if (!lr.ok()) return lr.status();
  spec.lease_replicas = static_cast<int>(*lr);
  Result<ConfigNode> cl = root.Child("changelog");
  if (!cl.ok()) return cl.status();
  INFERSCOPE_RETURN_IF_ERROR(
      cl->CheckKnownFields({"stream", "subject_prefix", "replicas", "chunk_bytes", "snapshot_every",
                            "max_queue_bytes", "publish_timeout"}));
  ChangelogOptions& c = spec.changelog;
  Result<std::string> stream = cl->GetString("stream", c.stream);
  if (!stream.ok()) return stream.status();
  c.stream = *stream;
  Result<std::string> prefix = cl->GetString("subject_prefix", c.subject_prefix);
  if (!prefix.ok()) return prefix.status();
  c.subject_prefix = *prefix;
  Result<int64_t> cr = cl->GetInt("replicas", c.replicas, 1, 5);
  if (!cr.ok()) return cr.status();
  c.replicas = static_cast<int>(*cr);
  Result<int64_t> chunk =
      cl->GetInt("chunk_bytes", static_cast<int64_t>(c.chunk_bytes), 1024, 900 * 1024);
  if (!chunk.ok()) return chunk.status();
  c.chunk_bytes = static_cast<size_t>(*chunk);
  Result<int64_t> every = cl->GetInt("snapshot_every", c.snapshot_every, 1, 1'000'000);
  if (!every.ok()) return every.status();
  c.snapshot_every = static_cast<int>(*every);
  Result<int64_t> queue =
      cl->GetInt("max_queue_bytes", static_cast<int64_t>(c.max_queue_bytes), 1 << 20);
  if (!queue.ok()) return queue.status();
  c.max_queue_bytes = static_cast<size_t>(*queue);
  Result<int64_t> timeout = cl->GetDurationMs("publish_timeout", c.publish_timeout_ms, 100);
  if (!timeout.ok()) return timeout.status();
  c.publish_timeout_ms = *timeout;
  if (Status st = c.Validate(); !st.ok()) return cl->Error("", st.message());
  return spec;
}

namespace {

// The topology of one slot: state in <base>/slots/<slot>, the jetstream source consuming the slot's
// partitions with durable "<durable>-<slot>", the results sink publishing as node <slot>, no API.
Result<TopologySpec> SlotTopology(const std::string& path, const std::string& state_base,
                                  const std::string& slot, const std::vector<uint32_t>& parts) {
  Result<TopologySpec> spec = LoadTopologyFile(path);
  if (!spec.ok()) return spec.status();
  const std::string base = state_base.empty() ? spec->state_path : state_base;
  if (base.empty()) {
    return Status::InvalidArgument(path + ": a node needs state.path (or --state-dir)");
  }
  spec->state_path = (std::filesystem::path(base) / "slots" / slot).string();
  spec->query_listen.clear();
  int jetstream_sources = 0;
  for (StageSpec& s : spec->sources) {
    if (s.type != "jetstream") continue;
    ++jetstream_sources;
    YAML::Node options = s.options.node();  // shares the tree of this spec (loaded for this slot)
    YAML::Node list(YAML::NodeType::Sequence);
    for (uint32_t p : parts) list.push_back(p);
    options["partitions"] = list;
    if (options["durable"] && !options["durable"].IsScalar()) {
      return s.options.Error("durable", "expected a string");
    }
    const std::string durable =
        options["durable"] ? options["durable"].as<std::string>() : std::string("inferscope");
    options["durable"] = durable + "-" + slot;
  }
  if (jetstream_sources != 1) {
    return Status::InvalidArgument(path +
                                   ": a node's topology needs exactly one jetstream source (" +
                                   std::to_string(jetstream_sources) + " found)");
  }
  for (StageSpec& s : spec->sinks) {
    if (s.type != "jetstream_results") continue;
    YAML::Node options = s.options.node();
    options["node"] = slot;
  }
  return spec;
}

}  // namespace

ClusterNode::ClusterNode(ClusterSpec spec, std::string topology_path, std::string state_dir)
    : spec_(std::move(spec)),
      topology_path_(std::move(topology_path)),
      state_dir_(std::move(state_dir)),
      clock_(std::make_unique<LeaseClock>()) {
  for (const auto& [name, parts] : spec_.slots) {
    auto slot = std::make_unique<Slot>();
    slot->name = name;
    slot->partitions = parts;
    slot->preferred = spec_.prefer.count(name) > 0;
    const Labels labels = {{"slot", name}};
    slot->renewals = metrics_.GetCounter("inferscope_node_lease_renewals_total",
                                         "Lease renewals that succeeded, per slot", labels);
    slot->renew_failures = metrics_.GetCounter(
        "inferscope_node_lease_renew_failures_total",
        "Lease renewals that failed (server unreachable or the lease taken), per slot", labels);
    slot->held = metrics_.GetGauge("inferscope_node_slot_held",
                                   "1 while this node holds the slot's lease", labels);
    // The changelog writer's figures, of the slot's current run on this node (0 when not held).
    Slot* raw = slot.get();
    auto stat = [this, raw](uint64_t ChangelogWriter::Stats::*field) {
      return [this, raw, field]() -> double {
        std::lock_guard<std::mutex> lock(mu_);
        return raw->writer ? static_cast<double>(raw->writer->stats().*field) : 0.0;
      };
    };
    metrics_.AddCallbackGauge("inferscope_node_changelog_queued_checkpoints",
                              "Checkpoints of the slot waiting for upload to its changelog (lag)",
                              labels, stat(&ChangelogWriter::Stats::queued), this);
    metrics_.AddCallbackGauge("inferscope_node_changelog_uploaded_bytes",
                              "Record bytes uploaded to the slot's changelog since it was claimed",
                              labels, stat(&ChangelogWriter::Stats::uploaded_bytes), this);
    metrics_.AddCallbackGauge("inferscope_node_changelog_upload_failures",
                              "Failed changelog appends (retried) since the slot was claimed",
                              labels, stat(&ChangelogWriter::Stats::failures), this);
    metrics_.AddCallbackGauge(
        "inferscope_node_changelog_lag_checkpoints",
        "Checkpoint ids between the slot's last durable checkpoint and the last uploaded one",
        labels,
        [this, raw]() -> double {
          std::lock_guard<std::mutex> lock(mu_);
          if (!raw->writer) return 0.0;
          const ChangelogWriter::Stats st = raw->writer->stats();
          return static_cast<double>(st.last_observed_id -
                                     std::min(st.last_observed_id, st.last_uploaded_id));
        },
        this);
    slots_.push_back(std::move(slot));
  }
}

ClusterNode::~ClusterNode() {
  Stop();
  metrics_.RemoveCallbacks(this);
}

int64_t ClusterNode::NowMs() const { return SystemClock::Instance().MonotonicNs() / 1'000'000; }

Status ClusterNode::Start(const std::string& listen) {
  // Every slot's topology must build before anything connects.
  for (const auto& slot : slots_) {
    Result<TopologySpec> spec =
        SlotTopology(topology_path_, state_dir_, slot->name, slot->partitions);
    if (!spec.ok()) return spec.status();
    Registry registry;
    RegisterBuiltins(registry);
    Result<std::unique_ptr<Engine>> engine = Engine::Build(*spec, registry);
    if (!engine.ok()) return engine.status();
    if (state_dir_.empty())
      state_dir_ = std::filesystem::path(spec->state_path).parent_path().parent_path().string();
  }
  natsStatus s = client::ConnectWithFailover(&conn_, spec_.url, "inferscope-node");
  if (s == NATS_OK) s = natsConnection_JetStream(&js_, conn_, nullptr);
  if (s == NATS_OK) {
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = std::max<int64_t>(spec_.lease_ttl_ms / 4, 250);
    s = natsConnection_JetStream(&lease_js_, conn_, &o);
  }
  if (s != NATS_OK) {
    return Status::Unavailable(std::string("node: connecting to ") + spec_.url + ": " +
                               natsStatus_GetText(s));
  }
  Result<std::unique_ptr<LeaseTable>> leases =
      LeaseTable::Open(lease_js_, spec_.lease_bucket, spec_.lease_replicas);
  if (!leases.ok()) return leases.status();
  leases_ = std::move(leases).value();
  INFERSCOPE_RETURN_IF_ERROR(EnsureChangelogStream(js_, spec_.changelog));
  if (!listen.empty()) {
    Result<HostPort> hp = ParseHostPort(listen);
    if (!hp.ok()) return Status::InvalidArgument("--listen: " + hp.status().message());
    http_ = std::make_unique<httplib::Server>();
    http_->Get("/v1/health", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(Health().dump(), "application/json");
    });
    http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.RenderPrometheus(), "text/plain; version=0.0.4");
    });
    http_host_ = hp->host;
    http_port_ = hp->port == 0 ? http_->bind_to_any_port(hp->host)
                               : (http_->bind_to_port(hp->host, hp->port) ? hp->port : -1);
    if (http_port_ <= 0) return Status::Unavailable("node: cannot listen on " + listen);
    http_thread_ = std::thread([this] { http_->listen_after_bind(); });
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  thread_ = std::thread([this] { LeaseLoop(); });
  spdlog::info(
      "node '{}' started: {} slots, prefers [{}], lease ttl {} ms", spec_.node, slots_.size(),
      [&] {
        std::string p;
        for (const std::string& n : spec_.prefer) p += (p.empty() ? "" : ", ") + n;
        return p;
      }(),
      spec_.lease_ttl_ms);
  return Status::Ok();
}

std::string ClusterNode::HttpUrl() const {
  if (!http_) return {};
  return "http://" + http_host_ + ":" + std::to_string(http_port_);
}

void ClusterNode::LeaseLoop() {
  SetThreadName("leases");
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    Tick();
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(spec_.lease_ttl_ms / 3), [this] { return stop_; });
  }
}

void ClusterNode::Tick() {
  const int64_t ttl = spec_.lease_ttl_ms;
  for (auto& owned : slots_) {
    Slot& slot = *owned;
    SlotState state;
    {
      std::lock_guard<std::mutex> lock(mu_);
      state = slot.state;
    }
    if (state != SlotState::kIdle) {
      if (state == SlotState::kStarting && slot.start_done.load()) {
        slot.starter.join();
        if (!slot.start_status.ok()) {
          // A server that does not answer yet (a stream just created, a leader election): the
          // lease is kept (renewed below) and the start tried again, restore included.
          spdlog::error("node {}: slot {} did not start, trying again: {}", spec_.node, slot.name,
                        slot.start_status.ToString());
          {
            std::lock_guard<std::mutex> lock(mu_);
            ++slot.start_failures;
          }
          LaunchStart(slot);
        } else {
          std::lock_guard<std::mutex> lock(mu_);
          slot.state = state = SlotState::kRunning;
        }
      }
      const int64_t now = NowMs();
      if (now - slot.renewed_sent_ms > ttl) {
        slot.renew_failures->Inc();
        StopSlot(slot, false, "lease not renewed within its ttl");
        continue;
      }
      if (slot.fenced.load()) {
        StopSlot(slot, false, "changelog append refused: another node wrote the slot's changelog");
        continue;
      }
      Result<uint64_t> renewed = leases_->Write(slot.name, spec_.node, ttl, slot.revision);
      if (renewed.ok()) {
        slot.revision = *renewed;
        slot.renewed_sent_ms = now;
        slot.renewals->Inc();
      } else {
        slot.renew_failures->Inc();
        if (renewed.status().code() == Status::Code::kFailedPrecondition) {
          StopSlot(slot, false, "lease taken by another node");
        } else {
          spdlog::warn("node {}: renewing slot {}: {}", spec_.node, slot.name,
                       renewed.status().ToString());
        }
      }
      continue;
    }
    const int64_t now = NowMs();
    Result<Lease> lease = leases_->Get(slot.name);
    if (!lease.ok()) {
      spdlog::warn("node {}: reading the lease of slot {}: {}", spec_.node, slot.name,
                   lease.status().ToString());
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      slot.owner_seen = lease->owner;
    }
    // A lease of this node's own name is a previous run of this node (names are unique).
    const bool own = !lease->owner.empty() && lease->owner == spec_.node;
    if (own || clock_->Expired(slot.name, *lease, now, ttl, slot.preferred)) {
      Result<uint64_t> claimed = leases_->Write(slot.name, spec_.node, ttl, lease->revision);
      if (claimed.ok()) {
        slot.revision = *claimed;
        slot.renewed_sent_ms = now;
        Claim(slot, *claimed, own ? std::string() : lease->owner);
      } else {
        spdlog::info("node {}: claiming slot {}: {}", spec_.node, slot.name,
                     claimed.status().ToString());
      }
    }
  }
}

void ClusterNode::Claim(Slot& slot, uint64_t revision, const std::string& previous) {
  spdlog::info("node {}: claimed slot {} (lease revision {}{})", spec_.node, slot.name, revision,
               previous.empty() ? "" : ", taken over from " + previous);
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot.state = SlotState::kStarting;
    ++slot.claims;
    if (!previous.empty()) ++slot.takeovers;
  }
  slot.held->Set(1);
  if (!previous.empty()) {
    metrics_
        .GetCounter("inferscope_node_takeovers_total",
                    "Slots claimed from another node whose lease expired", {{"slot", slot.name}})
        ->Inc();
  }
  slot.fenced.store(false);
  LaunchStart(slot);
}

void ClusterNode::LaunchStart(Slot& slot) {
  slot.start_done.store(false);
  slot.starter = std::thread([this, &slot] {
    SetThreadName("slot-" + slot.name);
    slot.start_status = StartSlot(slot);
    slot.start_done.store(true);
  });
}

Status ClusterNode::StartSlot(Slot& slot) {
  const int64_t started = NowMs();
  {
    std::lock_guard<std::mutex> lock(mu_);
    slot.started_at_ms = SystemClock::Instance().NowMs();
  }
  Result<TopologySpec> spec = SlotTopology(topology_path_, state_dir_, slot.name, slot.partitions);
  if (!spec.ok()) return spec.status();
  // The changelog is the truth: a local copy may be older than what another node uploaded.
  std::error_code ec;
  std::filesystem::remove_all(spec->state_path, ec);
  if (ec) return Status::IOError("removing " + spec->state_path + ": " + ec.message());
  std::filesystem::create_directories(spec->state_path, ec);
  ChangelogRestore restored;
  {
    StateStoreOptions options;
    options.path = spec->state_path;
    options.tiers = spec->state_tiers;
    options.rollup_delay_ms = spec->rollup_delay_ms;
    options.record_retention_ms.insert(spec->record_retention_ms.begin(),
                                       spec->record_retention_ms.end());
    MetricsRegistry scratch;
    Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, &scratch);
    if (!store.ok()) return store.status();
    Result<ChangelogRestore> r = RestoreChangelog(conn_, js_, spec_.changelog, slot.name, **store);
    if (!r.ok()) return r.status();
    restored = *r;
  }
  Registry registry;
  RegisterBuiltins(registry);
  Result<std::unique_ptr<Engine>> built = Engine::Build(*spec, registry);
  if (!built.ok()) return built.status();
  std::unique_ptr<Engine> engine = std::move(built).value();
  auto writer = std::make_unique<ChangelogWriter>(
      js_, spec_.changelog, slot.name, [&slot](const Status&) { slot.fenced.store(true); });
  ChangelogWriter* w = writer.get();
  Engine* e = engine.get();
  engine->SetCheckpointObserver([w, e](const PendingCheckpoint& c) {
    if (e->state() != nullptr) w->OnCheckpoint(c, *e->state());
  });
  writer->Start(restored.last_seq);
  Status st = engine->Start();
  if (!st.ok()) {
    writer->Stop(false);
    return st;
  }
  const double ms = static_cast<double>(NowMs() - started);
  spdlog::info(
      "node {}: slot {} running (partitions restored from the changelog: checkpoint {}, {} "
      "checkpoints applied, {} torn ignored, {} records, {} messages, {} bytes, in {} ms)",
      spec_.node, slot.name, restored.checkpoint, restored.applied, restored.torn, restored.records,
      restored.messages, restored.bytes, ms);
  metrics_
      .GetGauge("inferscope_node_restore_seconds",
                "How long the last restore of the slot from its changelog took",
                {{"slot", slot.name}})
      ->Set(ms / 1000.0);
  std::lock_guard<std::mutex> lock(mu_);
  slot.engine = std::move(engine);
  slot.writer = std::move(writer);
  slot.restore = restored;
  slot.restore_ms = ms;
  return Status::Ok();
}

void ClusterNode::StopSlot(Slot& slot, bool graceful, const std::string& why) {
  if (graceful) {
    spdlog::info("node {}: stopping slot {} ({})", spec_.node, slot.name, why);
  } else {
    spdlog::error("node {}: abandoning slot {}: {}", spec_.node, slot.name, why);
  }
  if (slot.starter.joinable()) slot.starter.join();
  std::unique_ptr<Engine> engine;
  std::unique_ptr<ChangelogWriter> writer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    engine = std::move(slot.engine);
    writer = std::move(slot.writer);
    slot.state = SlotState::kIdle;
    if (!graceful) {
      ++slot.losses;
      slot.last_loss = why;
    }
  }
  if (graceful) {
    if (engine) engine->Stop();  // its last checkpoint reaches the writer's queue
    if (writer) writer->Stop(/*drain=*/true);
  } else {
    if (writer) writer->Stop(/*drain=*/false);
    if (engine) engine->Abandon();
  }
  engine.reset();
  writer.reset();
  slot.held->Set(0);
}

void ClusterNode::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& slot : slots_) {
    bool held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      held = slot->state != SlotState::kIdle;
    }
    if (!held) continue;
    StopSlot(*slot, true, "node stopping");
    // Released: another node claims it at once.
    if (leases_) (void)leases_->Write(slot->name, "", spec_.lease_ttl_ms, slot->revision);
  }
  if (http_) {
    http_->stop();
    if (http_thread_.joinable()) http_thread_.join();
    http_.reset();
  }
  leases_.reset();
  if (lease_js_ != nullptr) {
    jsCtx_Destroy(lease_js_);
    lease_js_ = nullptr;
  }
  if (js_ != nullptr) {
    jsCtx_Destroy(js_);
    js_ = nullptr;
  }
  if (conn_ != nullptr) {
    natsConnection_Destroy(conn_);
    conn_ = nullptr;
  }
}

nlohmann::json ClusterNode::Health() const {
  nlohmann::json slots = nlohmann::json::object();
  std::vector<std::string> held;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& owned : slots_) {
    const Slot& s = *owned;
    nlohmann::json j = {{"state", SlotStateName(s.state)},
                        {"partitions", s.partitions},
                        {"preferred", s.preferred},
                        {"lease_owner_seen", s.owner_seen},
                        {"claims", s.claims},
                        {"takeovers", s.takeovers},
                        {"losses", s.losses},
                        {"start_failures", s.start_failures},
                        {"last_loss", s.last_loss},
                        {"renewals", s.renewals->value()},
                        {"renew_failures", s.renew_failures->value()}};
    if (s.state != SlotState::kIdle) held.push_back(s.name);
    if (s.state == SlotState::kRunning && s.writer) {
      const ChangelogWriter::Stats c = s.writer->stats();
      j["started_at_ms"] = s.started_at_ms;
      j["restore"] = {{"ms", s.restore_ms},           {"checkpoint", s.restore.checkpoint},
                      {"applied", s.restore.applied}, {"torn", s.restore.torn},
                      {"records", s.restore.records}, {"bytes", s.restore.bytes}};
      j["changelog"] = {{"uploaded_checkpoints", c.uploaded_checkpoints},
                        {"uploaded_snapshots", c.uploaded_snapshots},
                        {"uploaded_bytes", c.uploaded_bytes},
                        {"failures", c.failures},
                        {"dropped", c.dropped},
                        {"queued", c.queued},
                        {"queued_bytes", c.queued_bytes},
                        {"lag_checkpoints", c.queued},
                        {"last_uploaded_id", c.last_uploaded_id},
                        {"last_observed_id", c.last_observed_id},
                        {"purges", c.purges},
                        {"fenced", c.fenced}};
      if (s.engine) j["engine"] = s.engine->Health();
    }
    slots[s.name] = std::move(j);
  }
  return {{"status", "ok"},
          {"role", "node"},
          {"node", spec_.node},
          {"held", held},
          {"slots", std::move(slots)}};
}

namespace {

Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text << '\n';
    if (!out) return Status::IOError("cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::IOError("cannot rename " + tmp + ": " + ec.message());
  return Status::Ok();
}

}  // namespace

int NodeCommand(const NodeArgs& args) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  Result<ClusterSpec> spec = ClusterSpec::Load(args.cluster);
  if (!spec.ok()) {
    spdlog::error("{}", spec.status().message());
    return 2;
  }
  ClusterNode node(*spec, args.topology, args.state_dir);
  if (Status st = node.Start(args.listen); !st.ok()) {
    spdlog::error("{}", st.ToString());
    return st.code() == Status::Code::kInvalidArgument ? 2 : 1;
  }
  if (!args.ready_file.empty()) {
    const nlohmann::json info = {{"node", spec->node}, {"http", node.HttpUrl()}};
    if (Status st = WriteFileAtomically(args.ready_file, info.dump()); !st.ok()) {
      spdlog::error("{}", st.ToString());
      node.Stop();
      return 1;
    }
  }
  WaitForStop(signals, args.duration_s);
  spdlog::info("node {}: stopping: held slots stop gracefully and their leases are released",
               spec->node);
  node.Stop();
  return 0;
}

}  // namespace inferscope
