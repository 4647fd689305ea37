#include "sinks/stream_sink.h"

#include <utility>

namespace inferscope {

Status StreamSinkOptions::Validate(std::string_view sink) const {
  if (endpoint.empty()) {
    return Status::InvalidArgument(std::string(sink) + ": endpoint is required");
  }
  if (sndhwm < 0 || sndhwm > INT32_MAX) {
    return Status::InvalidArgument(std::string(sink) + ": sndhwm out of range");
  }
  return Status::Ok();
}

Result<StreamSinkOptions> ParseStreamOnlySinkOptions(const ConfigNode& options,
                                                     std::string_view sink) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({"endpoint", "sndhwm", "format", "curve"}));
  return ParseStreamSinkOptions(options, sink);
}

Result<StreamSinkOptions> ParseStreamSinkOptions(const ConfigNode& options, std::string_view sink) {
  StreamSinkOptions opts;
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
    opts.format = StreamFormat::kMsgpack;
  } else if (*format == "json") {
    opts.format = StreamFormat::kJson;
  } else {
    return options.Error("format", "expected 'msgpack' or 'json', got '" + *format + "'");
  }
  Result<CurveServerOptions> curve = ParseCurveServerOptions(options, /*require_globs=*/false);
  if (!curve.ok()) return curve.status();
  opts.curve = std::move(curve).value();
  INFERSCOPE_RETURN_IF_ERROR(opts.Validate(sink));
  return opts;
}

Status StreamPublisher::Open(const StageContext& ctx, const StreamSinkOptions& options,
                             std::string_view sink) {
  INFERSCOPE_RETURN_IF_ERROR(options.Validate(sink));
  if (ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "': the stage context lacks metrics");
  }
  sink_ = std::string(sink);
  Labels labels = {{"stage", ctx.name}};
  messages_ = ctx.metrics->GetCounter("inferscope_sink_messages_total",
                                      "Messages a sink published or wrote", labels);
  errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total", "Sink writes that failed",
                                    labels);
  pub_.RequireKeys(options.curve, ctx.metrics, ctx.name);
  return pub_.Bind(options.endpoint, static_cast<int>(options.sndhwm), sink);
}

Status StreamPublisher::CheckOpen() const {
  return pub_.bound() ? Status::Ok() : Status::Internal(sink_ + ": Write before Open");
}

Status StreamPublisher::Send(std::string_view topic, std::string_view payload) {
  Status st = pub_.Send(zmq::buffer(topic.data(), topic.size()),
                        zmq::buffer(payload.data(), payload.size()));
  (st.ok() ? messages_ : errors_)->Inc();
  return st;
}

}  // namespace inferscope
