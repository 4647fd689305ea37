#include "sinks/stream_sink.h"

#include <utility>

namespace inferscope {
namespace {

// Lets msgpack::packer append to a std::string.
struct StringWriter {
  std::string* out;
  void write(const char* data, size_t n) { out->append(data, n); }
};

}  // namespace

bool AppendTopicSeq(std::string_view payload, StreamFormat format, uint64_t seq, std::string* out) {
  out->clear();
  if (format == StreamFormat::kJson) {
    if (payload.size() < 2 || payload.front() != '{' || payload.back() != '}') return false;
    out->append(payload.substr(0, payload.size() - 1));
    if (payload.find_first_not_of(" \t\r\n", 1) != payload.size() - 1) out->push_back(',');
    out->append("\"topic_seq\":").append(std::to_string(seq)).push_back('}');
    return true;
  }
  if (payload.empty()) return false;
  const auto b0 = static_cast<uint8_t>(payload[0]);
  uint64_t n = 0;
  size_t header = 1;
  if ((b0 & 0xf0) == 0x80) {
    n = b0 & 0x0f;
  } else if (b0 == 0xde && payload.size() >= 3) {
    header = 3;
  } else if (b0 == 0xdf && payload.size() >= 5) {
    header = 5;
  } else {
    return false;
  }
  for (size_t i = 1; i < header; ++i) n = (n << 8) | static_cast<uint8_t>(payload[i]);
  if (n >= 0xffffffff) return false;
  // One more entry, under the smallest map header for it; the number in its smallest form.
  StringWriter writer{out};
  msgpack::packer<StringWriter> pk(writer);
  pk.pack_map(static_cast<uint32_t>(n + 1));
  out->append(payload.substr(header));
  pk.pack_str(9);
  pk.pack_str_body("topic_seq", 9);
  pk.pack_uint64(seq);
  return true;
}

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
  format_ = options.format;
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
  auto it = seqs_.find(topic);
  if (it == seqs_.end()) {
    if (seqs_.size() >= kMaxTopics) seqs_.clear();  // numbers start again, as after a restart
    it = seqs_.emplace(std::string(topic), 0).first;
  }
  // A failed send keeps its number: the subscribers see the gap of a message they did not get.
  const uint64_t seq = ++it->second;
  if (!AppendTopicSeq(payload, format_, seq, &stamped_)) {
    errors_->Inc();
    return Status::Internal(sink_ + ": a payload that is not a map cannot carry its topic_seq");
  }
  Status st = pub_.Send(zmq::buffer(topic.data(), topic.size()),
                        zmq::buffer(stamped_.data(), stamped_.size()));
  (st.ok() ? messages_ : errors_)->Inc();
  return st;
}

}  // namespace inferscope
