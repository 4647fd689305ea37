#include "sinks/zmq_workflow_sink.h"

#include <nlohmann/json.hpp>

#include "pipeline/json_text.h"
#include "sinks/stream_encoding.h"
#include "sinks/topic.h"

namespace inferscope {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

}  // namespace

Result<std::unique_ptr<ZmqWorkflowSink>> ZmqWorkflowSink::Create(const ConfigNode& options) {
  Result<StreamSinkOptions> opts = ParseStreamOnlySinkOptions(options, kName);
  if (!opts.ok()) return opts.status();
  return std::make_unique<ZmqWorkflowSink>(std::move(opts).value());
}

ZmqWorkflowSink::~ZmqWorkflowSink() { Close(); }

Status ZmqWorkflowSink::Open(const StageContext& ctx) { return pub_.Open(ctx, options_, kName); }

void ZmqWorkflowSink::Close() { pub_.Close(); }

std::string ZmqWorkflowSink::Topic(const WorkflowChange& c) {
  std::string topic = "workflows.";
  AppendTopicSegment(topic, WorkflowStateName(c.state));
  AppendTopicSegment(topic, c.instance);
  return topic;
}

void ZmqWorkflowSink::EncodeMsgpack(const WorkflowChange& c, msgpack::sbuffer& out) {
  out.clear();
  Packer pk(out);
  pk.pack_map(11);
  PackStr(pk, "v");
  pk.pack_int(kVersion);
  PackStr(pk, "seq");
  pk.pack_uint64(c.seq);
  PackStr(pk, "id");
  PackStr(pk, c.id);
  PackStr(pk, "instance");
  PackStr(pk, c.instance);
  PackStr(pk, "model");
  PackStr(pk, c.model);
  PackStr(pk, "state");
  PackStr(pk, WorkflowStateName(c.state));
  PackStr(pk, "at");
  pk.pack_int64(c.at_ms);
  PackStr(pk, "by");
  PackStr(pk, c.by);
  PackStr(pk, "note");
  PackStr(pk, c.note);
  PackStr(pk, "verdict");
  if (c.verdict.empty()) {
    pk.pack_nil();
  } else {
    PackStr(pk, c.verdict);
  }
  PackStr(pk, "progress");
  PackFloat64OrNil(out, c.progress);
}

std::string ZmqWorkflowSink::EncodeJson(const WorkflowChange& c) {
  nlohmann::json j = {{"v", kVersion},
                      {"seq", c.seq},
                      {"id", c.id},
                      {"instance", c.instance},
                      {"model", c.model},
                      {"state", WorkflowStateName(c.state)},
                      {"at", c.at_ms},
                      {"by", c.by},
                      {"note", c.note},
                      {"verdict", c.verdict.empty() ? nlohmann::json() : nlohmann::json(c.verdict)},
                      {"progress", c.progress}};
  return ToJsonText(j);
}

Status ZmqWorkflowSink::Write(const OutputBatch& batch) {
  INFERSCOPE_RETURN_IF_ERROR(pub_.CheckOpen());
  for (const WorkflowChange& c : batch.Get<kind::WorkflowChange>()) {
    topic_ = Topic(c);
    INFERSCOPE_RETURN_IF_ERROR(
        pub_.SendRecord(topic_, c, options_.format, EncodeMsgpack, EncodeJson));
  }
  return Status::Ok();
}

}  // namespace inferscope
