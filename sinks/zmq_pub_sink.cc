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
namespace {}  // namespace

Result<std::unique_ptr<ZmqPubSink>> ZmqPubSink::Create(const ConfigNode& options) {
  Result<StreamSinkOptions> opts = ParseStreamOnlySinkOptions(options, kName);
  if (!opts.ok()) return opts.status();
  return std::make_unique<ZmqPubSink>(std::move(opts).value());
}

ZmqPubSink::~ZmqPubSink() { Close(); }

Status ZmqPubSink::Open(const StageContext& ctx) {
  if (ctx.interner == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "': the stage context lacks an interner");
  }
  interner_ = ctx.interner;
  return pub_.Open(ctx, options_, kName);
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
      {"sum", JsonNumberOrNull(stats.sum)},
      {"mean", JsonNumberOrNull(stats.mean)},
      {"min", JsonNumberOrNull(stats.min)},
      {"max", JsonNumberOrNull(stats.max)},
      {"variance", JsonNumberOrNull(stats.variance)},
      {"last", JsonNumberOrNull(stats.last)},
      {"rate", JsonNumberOrNull(stats.rate_per_s)},
      {"events", stats.events},
      {"errors", stats.errors},
      {"error_ratio", JsonNumberOrNull(stats.error_ratio)},
      {"watermark", watermark_ms},
      {"update", summary.update},
  };
  if (stats.count > 0) {
    j["p50"] = JsonNumberOrNull(stats.p50);
    j["p90"] = JsonNumberOrNull(stats.p90);
    j["p95"] = JsonNumberOrNull(stats.p95);
    j["p99"] = JsonNumberOrNull(stats.p99);
  }
  json_ = ToJsonText(j);
}

Status ZmqPubSink::Write(const OutputBatch& batch) {
  INFERSCOPE_RETURN_IF_ERROR(pub_.CheckOpen());
  INFERSCOPE_RETURN_IF_ERROR(Publish(batch.Get<kind::PaneSummary>(), batch.watermark_ms));
  return Publish(batch.Get<kind::WindowSummary>(), batch.watermark_ms);
}

Status ZmqPubSink::Publish(std::span<const WindowSummary> summaries, int64_t watermark_ms) {
  for (const WindowSummary& summary : summaries) {
    topic_.assign("summaries.");
    AppendTopicSegment(topic_, interner_->Name(summary.series.instance));
    AppendTopicSegment(topic_, interner_->Name(summary.series.model));
    std::string_view payload;
    if (options_.format == StreamFormat::kMsgpack) {
      EncodeMsgpack(summary, watermark_ms);
      payload = std::string_view(packed_.data(), packed_.size());
    } else {
      EncodeJson(summary, watermark_ms);
      payload = json_;
    }
    INFERSCOPE_RETURN_IF_ERROR(pub_.Send(topic_, payload));
  }
  return Status::Ok();
}

}  // namespace inferscope
