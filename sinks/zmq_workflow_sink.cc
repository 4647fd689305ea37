#include "sinks/zmq_workflow_sink.h"

#include <nlohmann/json.hpp>

#include "pipeline/json_text.h"
#include "sinks/stream_encoding.h"
#include "sinks/topic.h"

namespace inferscope {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

}  // namespace

Status ZmqWorkflowSink::Options::Validate() const {
  if (endpoint.empty()) return Status::InvalidArgument("zmq_workflows: endpoint is required");
  if (sndhwm < 0 || sndhwm > INT32_MAX) {
    return Status::InvalidArgument("zmq_workflows: sndhwm out of range");
  }
  return Status::Ok();
}

Result<std::unique_ptr<ZmqWorkflowSink>> ZmqWorkflowSink::Create(const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({"endpoint", "sndhwm", "format", "curve"}));
  Options opts;
  Result<std::string> endpoint = options.GetEndpoint("endpoint");
  if (!endpoint.ok()) return endpoint.status();
  if (endpoint->empty()) return options.Error("endpoint", "must not be empty");
  opts.endpoint = *endpoint;
  Result<int64_t> hwm = options.GetInt("sndhwm", opts.sndhwm, 0, INT32_MAX);
  if (!hwm.ok()) return hwm.status();
  opts.sndhwm = *hwm;
  Result<std::string> format = options.GetString("format", "msgpack");
  if (!format.ok()) return format.status();
  if (*format == "msgpack") {
    opts.format = Format::kMsgpack;
  } else if (*format == "json") {
    opts.format = Format::kJson;
  } else {
    return options.Error("format", "expected 'msgpack' or 'json', got '" + *format + "'");
  }
  Result<CurveServerOptions> curve = ParseCurveServerOptions(options, /*require_globs=*/false);
  if (!curve.ok()) return curve.status();
  opts.curve = std::move(curve).value();
  INFERSCOPE_RETURN_IF_ERROR(opts.Validate());
  return std::make_unique<ZmqWorkflowSink>(std::move(opts));
}

ZmqWorkflowSink::~ZmqWorkflowSink() { Close(); }

Status ZmqWorkflowSink::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "': the stage context lacks metrics");
  }
  Labels labels = {{"stage", ctx.name}};
  messages_ = ctx.metrics->GetCounter("inferscope_sink_messages_total",
                                      "Messages a sink published or wrote", labels);
  errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total", "Sink writes that failed",
                                    labels);
  pub_.RequireKeys(options_.curve, ctx.metrics, ctx.name);
  return pub_.Bind(options_.endpoint, static_cast<int>(options_.sndhwm), "zmq_workflows");
}

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
  if (!pub_.bound()) return Status::Internal("zmq_workflows: Write before Open");
  uint64_t sent = 0;
  Status result;
  for (const WorkflowChange& c : batch.Get<kind::WorkflowChange>()) {
    topic_ = Topic(c);
    std::string json;
    zmq::const_buffer payload;
    if (options_.format == Format::kMsgpack) {
      EncodeMsgpack(c, packed_);
      payload = zmq::buffer(packed_.data(), packed_.size());
    } else {
      json = EncodeJson(c);
      payload = zmq::buffer(json);
    }
    result = pub_.Send(zmq::buffer(topic_), payload);
    if (!result.ok()) {
      errors_->Inc();
      break;
    }
    ++sent;
  }
  messages_->Inc(sent);
  return result;
}

}  // namespace inferscope
