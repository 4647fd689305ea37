#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <msgpack.hpp>
#include <zmq.hpp>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"
#include "sinks/stream_sink.h"
#include "workflows/workflow.h"

namespace inferscope {

// ZmqWorkflowSink publishes optimization workflow state changes (kind::WorkflowChange, emitted by
// workflow_canary) on a ZeroMQ PUB socket as [topic, payload] with topic
// "workflows.<state>.<instance>." (names escaped, sinks/topic.h), so a subscriber filters by
// prefix ("workflows." everything, "workflows.ROLLED_BACK." the rollbacks, "workflows.
// ROLLED_BACK.vllm-1." those of one instance). The payload (msgpack map, or JSON; `progress` is
// always float64) is `v, seq, id, instance, model, state, at, by, note, verdict, progress`
// (docs/WORKFLOWS.md, "Stream"); the full workflow, with its evidence, is at
// GET /v1/workflows/{id}.
//
// Options: `endpoint` (required; bound), `sndhwm` (default 10000), `format` (msgpack | json),
// `curve` (optional: only the listed subscriber keys may subscribe; see PubSocket).
// Lifecycle: Open binds; Write publishes; Close closes with a 100 ms linger.
// Concurrency: Write from the sink thread only.
// Limitations: fire-and-forget like every PUB socket; changes made while no engine runs, or
// before a restart and not yet emitted, are not published (the registry in RocksDB has them).
class ZmqWorkflowSink final : public Sink {
 public:
  static constexpr std::string_view kName = "zmq_workflows";
  static constexpr std::string_view kDescription =
      "Publishes workflow state changes on a ZeroMQ PUB socket (topic "
      "workflows.<state>.<instance>.)";

  using Options = StreamSinkOptions;
  static constexpr int kVersion = 1;

  static Result<std::unique_ptr<ZmqWorkflowSink>> Create(const ConfigNode& options);
  explicit ZmqWorkflowSink(Options options) : options_(std::move(options)) {}
  ~ZmqWorkflowSink() override;

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override { return KindSet::Of<kind::WorkflowChange>(); }
  Status Write(const OutputBatch& batch) override;
  void Close() override;
  std::string Endpoint() const override { return pub_.endpoint(); }

  // The topic and payloads of one change (exposed for tests and docs).
  static std::string Topic(const WorkflowChange& c);
  static void EncodeMsgpack(const WorkflowChange& c, msgpack::sbuffer& out);
  static std::string EncodeJson(const WorkflowChange& c);

 private:
  Options options_;
  StreamPublisher pub_;
  std::string topic_;
};

}  // namespace inferscope
