#include "sinks/zmq_pub_sink.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "pipeline/interner.h"
#include "pipeline/json_text.h"
#include "pipeline/summary.h"
#include "sinks/stream_encoding.h"
#include "sinks/topic.h"
#include "values/aggregate.h"

namespace inferscope {
namespace {

// A JSON number that is always written with a fraction or exponent (1.0, not 1), or null.
nlohmann::json JsonDouble(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
}

}  // namespace

Status ZmqPubSink::Options::Validate() const {
  if (endpoint.empty()) return Status::InvalidArgument("zmq_pub: endpoint is required");
  if (sndhwm < 0 || sndhwm > INT32_MAX)
    return Status::InvalidArgument("zmq_pub: sndhwm out of range");
  return Status::Ok();
}

Result<std::unique_ptr<ZmqPubSink>> ZmqPubSink::Create(const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({"endpoint", "sndhwm", "format", "curve"}));
  Options opts;
  Result<std::string> endpoint = options.GetEndpoint("endpoint");
  if (!endpoint.ok()) return endpoint.status();
  opts.endpoint = *endpoint;
  if (opts.endpoint.empty()) return options.Error("endpoint", "must not be empty");
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
  return std::make_unique<ZmqPubSink>(std::move(opts));
}

ZmqPubSink::~ZmqPubSink() { Close(); }

Status ZmqPubSink::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.interner == nullptr || ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name +
                                   "': the stage context lacks an interner or metrics");
  }
  interner_ = ctx.interner;
  Labels labels = {{"stage", ctx.name}};
  messages_ = ctx.metrics->GetCounter("inferscope_sink_messages_total",
                                      "Messages a sink published or wrote", labels);
  errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total", "Sink writes that failed",
                                    labels);
  pub_.RequireKeys(options_.curve, ctx.metrics, ctx.name);
  return pub_.Bind(options_.endpoint, static_cast<int>(options_.sndhwm), "zmq_pub");
}

void ZmqPubSink::Close() { pub_.Close(); }

void ZmqPubSink::EncodeMsgpack(const WindowSummary& summary, int64_t watermark_ms) {
  const SummaryStats stats = Summarize(summary.agg, summary.end_ms - summary.start_ms);
  const bool has_values = stats.count > 0;
  packed_.clear();
  msgpack::packer<msgpack::sbuffer> pk(packed_);
  pk.pack_map(has_values ? 23 : 19);
  PackStr(pk, "v");
  pk.pack_int(kVersion);
  const std::string_view names[3] = {interner_->Name(summary.series.instance),
                                     interner_->Name(summary.series.model),
                                     interner_->Name(summary.series.metric)};
  const std::string_view name_keys[3] = {"instance", "model", "metric"};
  for (int i = 0; i < 3; ++i) {
    PackStr(pk, name_keys[i]);
    PackStr(pk, names[i]);
  }
  PackStr(pk, "start");
  pk.pack_int64(summary.start_ms);
  PackStr(pk, "end");
  pk.pack_int64(summary.end_ms);
  PackStr(pk, "count");
  pk.pack_uint64(stats.count);
  PackStr(pk, "sum");
  PackFloat64OrNil(packed_, stats.sum);
  PackStr(pk, "mean");
  PackFloat64OrNil(packed_, stats.mean);
  PackStr(pk, "min");
  PackFloat64OrNil(packed_, stats.min);
  PackStr(pk, "max");
  PackFloat64OrNil(packed_, stats.max);
  PackStr(pk, "variance");
  PackFloat64OrNil(packed_, stats.variance);
  PackStr(pk, "last");
  PackFloat64OrNil(packed_, stats.last);
  if (has_values) {
    PackStr(pk, "p50");
    PackFloat64OrNil(packed_, stats.p50);
    PackStr(pk, "p90");
    PackFloat64OrNil(packed_, stats.p90);
    PackStr(pk, "p95");
    PackFloat64OrNil(packed_, stats.p95);
    PackStr(pk, "p99");
    PackFloat64OrNil(packed_, stats.p99);
  }
  PackStr(pk, "rate");
  PackFloat64OrNil(packed_, stats.rate_per_s);
  PackStr(pk, "events");
  pk.pack_uint64(stats.events);
  PackStr(pk, "errors");
  pk.pack_uint64(stats.errors);
  PackStr(pk, "error_ratio");
  PackFloat64OrNil(packed_, stats.error_ratio);
  PackStr(pk, "watermark");
  pk.pack_int64(watermark_ms);
  PackStr(pk, "update");
  if (summary.update) {
    pk.pack_true();
  } else {
    pk.pack_false();
  }
}

void ZmqPubSink::EncodeJson(const WindowSummary& summary, int64_t watermark_ms) {
  const SummaryStats stats = Summarize(summary.agg, summary.end_ms - summary.start_ms);
  nlohmann::json j = {
      {"v", kVersion},
      {"instance", interner_->Name(summary.series.instance)},
      {"model", interner_->Name(summary.series.model)},
      {"metric", interner_->Name(summary.series.metric)},
      {"start", summary.start_ms},
      {"end", summary.end_ms},
      {"count", stats.count},
      {"sum", JsonDouble(stats.sum)},
      {"mean", JsonDouble(stats.mean)},
      {"min", JsonDouble(stats.min)},
      {"max", JsonDouble(stats.max)},
      {"variance", JsonDouble(stats.variance)},
      {"last", JsonDouble(stats.last)},
      {"rate", JsonDouble(stats.rate_per_s)},
      {"events", stats.events},
      {"errors", stats.errors},
      {"error_ratio", JsonDouble(stats.error_ratio)},
      {"watermark", watermark_ms},
      {"update", summary.update},
  };
  if (stats.count > 0) {
    j["p50"] = JsonDouble(stats.p50);
    j["p90"] = JsonDouble(stats.p90);
    j["p95"] = JsonDouble(stats.p95);
    j["p99"] = JsonDouble(stats.p99);
  }
  json_ = ToJsonText(j);
}

Status ZmqPubSink::Write(const OutputBatch& batch) {
  if (!pub_.bound()) return Status::Internal("zmq_pub: Write before Open");
  uint64_t sent = 0;
  Status result;
  const std::span<const WindowSummary> summaries[] = {batch.Get<kind::PaneSummary>(),
                                                      batch.Get<kind::WindowSummary>()};
  for (std::span<const WindowSummary> part : summaries) {
    result = Publish(part, batch.watermark_ms, sent);
    if (!result.ok()) break;
  }
  messages_->Inc(sent);
  return result;
}

Status ZmqPubSink::Publish(std::span<const WindowSummary> summaries, int64_t watermark_ms,
                           uint64_t& sent) {
  Status result;
  for (const WindowSummary& summary : summaries) {
    topic_.assign("summaries.");
    AppendTopicSegment(topic_, interner_->Name(summary.series.instance));
    AppendTopicSegment(topic_, interner_->Name(summary.series.model));
    zmq::const_buffer payload;
    if (options_.format == Format::kMsgpack) {
      EncodeMsgpack(summary, watermark_ms);
      payload = zmq::buffer(packed_.data(), packed_.size());
    } else {
      EncodeJson(summary, watermark_ms);
      payload = zmq::buffer(json_);
    }
    result = pub_.Send(zmq::buffer(topic_), payload);
    if (!result.ok()) {
      errors_->Inc();
      break;
    }
    ++sent;
  }
  return result;
}

}  // namespace inferscope
