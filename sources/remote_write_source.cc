#include "sources/remote_write_source.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

namespace inferscope {
namespace {

constexpr int64_t kMaxWaitMs = 50;  // Run notices `stop` and due groups within this

std::string_view ReplyName(RemoteWriteSource::Reply r) {
  using R = RemoteWriteSource::Reply;
  switch (r) {
    case R::kOk:
      return "ok";
    case R::kBadSnappy:
      return "bad_snappy";
    case R::kBadProtobuf:
      return "bad_protobuf";
    case R::kTooLarge:
      return "too_large";
    case R::kTooMany:
      return "too_many";
    case R::kBadEncoding:
      return "bad_encoding";
    case R::kUnsupported:
      return "unsupported";
    case R::kBusy:
      return "busy";
    case R::kCount_:
      break;
  }
  return "bad_protobuf";
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

void AppendValue(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, ec == std::errc() ? p : buf);
  }
}

void AppendEscaped(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

// A metric name the text format accepts ([a-zA-Z_:][a-zA-Z0-9_:]*); anything else is skipped.
bool ValidName(std::string_view n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// What a remote-write sample is, inferred from the mapping tables (remote write has no # TYPE).
// Returns false for names no table carries.
bool InferFamily(PromEngine engine, std::string_view name, std::string_view* family, PromType* type,
                 uint8_t* order) {
  *order = 0;
  if (FindPromMapping(engine, name, PromRole::kValue) != nullptr) {
    *family = name;
    *type = PromType::kGauge;
    return true;
  }
  if (FindPromMapping(engine, name, PromRole::kTotal) != nullptr) {
    *family = name;
    *type = PromType::kCounter;
    return true;
  }
  static constexpr std::pair<std::string_view, uint8_t> kSuffixes[] = {
      {"_bucket", 0}, {"_sum", 1}, {"_count", 2}};
  for (const auto& [suffix, order_of] : kSuffixes) {
    if (!EndsWith(name, suffix)) continue;
    const std::string_view base = name.substr(0, name.size() - suffix.size());
    for (PromRole r : {PromRole::kBucket, PromRole::kSum, PromRole::kCount}) {
      if (FindPromMapping(engine, base, r) != nullptr) {
        *family = base;
        *type = PromType::kHistogram;
        *order = order_of;
        return true;
      }
    }
  }
  return false;
}

std::string_view TypeName(PromType t) {
  switch (t) {
    case PromType::kCounter:
      return "counter";
    case PromType::kGauge:
      return "gauge";
    case PromType::kHistogram:
      return "histogram";
    default:
      return "untyped";
  }
}

}  // namespace

Status RemoteWriteSource::Options::Validate() const {
  if (port < 0 || port > 65535) return Status::InvalidArgument("listen: bad port");
  if (host.empty()) return Status::InvalidArgument("listen: expected host:port");
  if (max_body_bytes < 1024) return Status::InvalidArgument("max_body_bytes must be >= 1024");
  if (max_decoded_bytes < max_body_bytes) {
    return Status::InvalidArgument("max_decoded_bytes must be >= max_body_bytes");
  }
  if (max_pending_samples < 1) return Status::InvalidArgument("max_pending_samples >= 1");
  if (flush_delay_ms < 0) return Status::InvalidArgument("flush_delay must be >= 0");
  if (max_instances < 1) return Status::InvalidArgument("max_instances must be >= 1");
  if (max_series_per_instance < 1) return Status::InvalidArgument("max_series_per_instance >= 1");
  if (instance_label.empty()) return Status::InvalidArgument("instance_label must not be empty");
  if (default_instance.size() > 255 || model.size() > 255) {
    return Status::InvalidArgument("default_instance and model are at most 255 bytes");
  }
  return parser.Validate();
}

Result<std::unique_ptr<RemoteWriteSource>> RemoteWriteSource::Create(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(
      node.CheckKnownFields({"listen", "max_body_bytes", "max_decoded_bytes", "max_pending_samples",
                             "flush_delay", "max_instances", "max_series_per_instance", "engine",
                             "instance_label", "default_instance", "model", "model_labels"}));
  Options o;
  Result<std::string> listen = node.GetString("listen", "127.0.0.1:9201");
  if (!listen.ok()) return listen.status();
  const size_t colon = listen->rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return node.Error("listen", "expected host:port (port 0: any free port)");
  }
  o.host = listen->substr(0, colon);
  if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']') {
    o.host = o.host.substr(1, o.host.size() - 2);
  }
  const std::string port = listen->substr(colon + 1);
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), o.port);
  if (ec != std::errc() || ptr != port.data() + port.size() || o.port < 0 || o.port > 65535) {
    return node.Error("listen", "bad port");
  }
  Result<int64_t> body =
      node.GetInt("max_body_bytes", static_cast<int64_t>(o.max_body_bytes), 1024, int64_t{1} << 30);
  if (!body.ok()) return body.status();
  o.max_body_bytes = static_cast<size_t>(*body);
  Result<int64_t> decoded = node.GetInt("max_decoded_bytes", std::max<int64_t>(*body * 4, 64 << 20),
                                        1024, int64_t{4} << 30);
  if (!decoded.ok()) return decoded.status();
  o.max_decoded_bytes = static_cast<size_t>(*decoded);
  Result<int64_t> pending = node.GetInt(
      "max_pending_samples", static_cast<int64_t>(o.max_pending_samples), 1, int64_t{1} << 32);
  if (!pending.ok()) return pending.status();
  o.max_pending_samples = static_cast<size_t>(*pending);
  Result<int64_t> flush = node.GetDurationMs("flush_delay", o.flush_delay_ms, 0);
  if (!flush.ok()) return flush.status();
  o.flush_delay_ms = *flush;
  Result<int64_t> max_instances = node.GetInt("max_instances", 10'000, 1, 1'000'000);
  if (!max_instances.ok()) return max_instances.status();
  o.max_instances = static_cast<size_t>(*max_instances);
  Result<int64_t> max_series = node.GetInt("max_series_per_instance", 10'000, 1, 10'000'000);
  if (!max_series.ok()) return max_series.status();
  o.max_series_per_instance = static_cast<size_t>(*max_series);
  Result<std::string> engine = node.GetString("engine", "auto");
  if (!engine.ok()) return engine.status();
  if (!ParsePromEngine(*engine, &o.engine)) {
    return node.Error("engine", "expected auto, vllm, sglang, tgi or dcgm");
  }
  Result<std::string> label = node.GetString("instance_label", o.instance_label);
  if (!label.ok()) return label.status();
  o.instance_label = *label;
  Result<std::string> default_instance = node.GetString("default_instance", "");
  if (!default_instance.ok()) return default_instance.status();
  o.default_instance = *default_instance;
  Result<std::string> model = node.GetString("model", "");
  if (!model.ok()) return model.status();
  o.model = *model;
  if (node.Has("model_labels")) {
    const YAML::Node labels = node.node()["model_labels"];
    if (!labels.IsSequence()) return node.Error("model_labels", "expected a list of label names");
    o.model_labels.clear();
    for (const YAML::Node& l : labels) {
      if (!l.IsScalar()) return node.Error("model_labels", "expected a list of label names");
      o.model_labels.push_back(l.Scalar());
    }
  }
  Status valid = o.Validate();
  if (!valid.ok()) return node.Error("", valid.message());
  return std::make_unique<RemoteWriteSource>(std::move(o));
}

RemoteWriteSource::RemoteWriteSource(Options options)
    : options_(std::move(options)),
      decoder_(RwLimits{options_.max_decoded_bytes, 1'000'000, 128, options_.max_pending_samples}) {
}

RemoteWriteSource::~RemoteWriteSource() { Close(); }

void RemoteWriteSource::Count(Reply r) {
  const auto i = static_cast<size_t>(r);
  if (i < requests_.size() && requests_[i] != nullptr) requests_[i]->Inc();
}

Status RemoteWriteSource::Open(const StageContext& ctx) {
  if (ctx.interner == nullptr || ctx.clock == nullptr) {
    return Status::InvalidArgument(
        "prometheus_remote_write source: the stage context needs an interner and a clock");
  }
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  ctx_ = ctx;
  publisher_ = ctx.interner->Intern("remote_write/" + ctx.name);
  if (publisher_ == 0) {
    return Status::Unavailable("prometheus_remote_write source: the string table is full");
  }
  ctx.interner->Pin(publisher_);
  if (ctx.metrics != nullptr) {
    requests_.assign(static_cast<size_t>(Reply::kCount_), nullptr);
    for (size_t r = 0; r < requests_.size(); ++r) {
      requests_[r] = ctx.metrics->GetCounter(
          "inferscope_remote_write_requests_total", "Remote-write requests by result",
          {{"stage", ctx.name}, {"result", std::string(ReplyName(static_cast<Reply>(r)))}});
    }
    const Labels stage = {{"stage", ctx.name}};
    samples_ = ctx.metrics->GetCounter("inferscope_remote_write_samples_total",
                                       "Samples received by remote write", stage);
    unmapped_ = ctx.metrics->GetCounter("inferscope_remote_write_unmapped_samples_total",
                                        "Remote-write samples of names no mapping carries", stage);
    late_ = ctx.metrics->GetCounter(
        "inferscope_remote_write_late_samples_total",
        "Remote-write samples at or before their instance's last converted timestamp", stage);
    no_instance_ = ctx.metrics->GetCounter(
        "inferscope_remote_write_no_instance_samples_total",
        "Remote-write samples without the instance label (and no default_instance)", stage);
    instances_dropped_ = ctx.metrics->GetCounter(
        "inferscope_remote_write_instance_limit_samples_total",
        "Remote-write samples of new instances beyond max_instances", stage);
    events_ = ctx.metrics->GetCounter("inferscope_remote_write_events_total",
                                      "Gauge events made from remote-write samples", stage);
    resets_ = ctx.metrics->GetCounter("inferscope_remote_write_counter_resets_total",
                                      "Counter resets seen in remote-write samples", stage);
    instances_gauge_ = ctx.metrics->GetGauge("inferscope_remote_write_instances",
                                             "Instances with remote-write state", stage);
  }
  server_ = std::make_unique<httplib::Server>();
  server_->set_payload_max_length(options_.max_body_bytes);
  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    int status = 204;
    std::string reply;
    Handle(req.body, req.get_header_value("Content-Encoding"), req.get_header_value("Content-Type"),
           &status, &reply);
    res.status = status;
    if (!reply.empty()) res.set_content(reply, "application/json");
  };
  server_->Post("/api/v1/write", handler);
  server_->Post("/write", handler);
  // Bodies beyond max_body_bytes are refused by httplib before the handler: 413, counted here.
  server_->set_error_handler(
      httplib::Server::HandlerWithResponse([this](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        // Refused by httplib before the handler: a body beyond max_body_bytes (413), or one it
        // could not decode by its Content-Encoding (gzip, deflate, br: 400 or 415).
        std::string message;
        Reply reply = Reply::kBadEncoding;
        if (res.status == 413) {
          reply = Reply::kTooLarge;
          message = "body beyond max_body_bytes (" + std::to_string(options_.max_body_bytes) + ")";
        } else if (res.status == 400 || res.status == 415) {
          message = "body not decodable by its Content-Encoding; expected Content-Encoding: snappy";
        } else {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        Count(reply);
        nlohmann::json j = {{"error", std::string(ReplyName(reply))}, {"message", message}};
        res.set_content(j.dump(), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  int port = options_.port;
  if (port == 0) {
    port = server_->bind_to_any_port(options_.host);
    if (port <= 0) {
      return Status::Unavailable("prometheus_remote_write: cannot listen on " + options_.host);
    }
  } else if (!server_->bind_to_port(options_.host, port)) {
    return Status::Unavailable("prometheus_remote_write: cannot listen on " + options_.host + ":" +
                               std::to_string(port));
  }
  const bool v6 = options_.host.find(':') != std::string::npos;
  endpoint_ =
      "http://" + (v6 ? "[" + options_.host + "]" : options_.host) + ":" + std::to_string(port);
  server_thread_ = std::thread([this] { server_->listen_after_bind(); });
  return Status::Ok();
}

void RemoteWriteSource::Close() {
  if (server_ != nullptr) server_->stop();
  if (server_thread_.joinable()) server_thread_.join();
  server_.reset();
}

void RemoteWriteSource::Handle(std::string_view body, std::string_view encoding,
                               std::string_view content_type, int* status, std::string* reply) {
  auto fail = [&](int code, Reply r, const std::string& message) {
    Count(r);
    *status = code;
    *reply = nlohmann::json{{"error", std::string(ReplyName(r))}, {"message", message}}.dump();
  };
  if (content_type.find("io.prometheus.write.v2") != std::string_view::npos) {
    fail(415, Reply::kUnsupported,
         "remote write 2.0 is not supported; send 1.0 (prometheus.WriteRequest)");
    return;
  }
  if (encoding != "snappy") {
    fail(400, Reply::kBadEncoding, "expected Content-Encoding: snappy");
    return;
  }
  if (body.size() > options_.max_body_bytes) {
    fail(413, Reply::kTooLarge, "body beyond max_body_bytes");
    return;
  }
  std::lock_guard<std::mutex> decode_lock(decode_mu_);
  std::string reason;
  const RwError e = decoder_.DecodeSnappy(body, &reason);
  switch (e) {
    case RwError::kNone:
      break;
    case RwError::kBadSnappy:
      fail(400, Reply::kBadSnappy, reason);
      return;
    case RwError::kTooLarge:
      fail(413, Reply::kTooLarge, reason);
      return;
    case RwError::kTooMany:
      fail(400, Reply::kTooMany, reason);
      return;
    default:
      fail(400, Reply::kBadProtobuf, reason);
      return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!Accept(decoder_, ctx_.clock->NowMs(), &reason)) {
    fail(503, Reply::kBusy, reason);
    return;
  }
  Count(Reply::kOk);
  *status = 204;
}

bool RemoteWriteSource::Accept(const RemoteWriteDecoder& decoder, int64_t now_ms,
                               std::string* reason) {
  if (pending_ + decoder.stats().samples > options_.max_pending_samples) {
    *reason = "more than max_pending_samples (" + std::to_string(options_.max_pending_samples) +
              ") wait for conversion; retry later";
    return false;
  }
  uint64_t unmapped = 0;
  uint64_t late = 0;
  uint64_t no_instance = 0;
  uint64_t dropped = 0;
  for (const RwSeries& s : decoder.series()) {
    const std::string_view name = s.Label("__name__");
    std::string_view family;
    PromType type = PromType::kUntyped;
    uint8_t order = 0;
    if (!ValidName(name) || !InferFamily(options_.engine, name, &family, &type, &order)) {
      unmapped += s.samples.size();
      continue;
    }
    std::string_view instance_name = s.Label(options_.instance_label);
    if (instance_name.empty()) instance_name = options_.default_instance;
    if (instance_name.empty() || instance_name.size() > 255) {
      no_instance += s.samples.size();
      continue;
    }
    auto it = instances_.find(std::string(instance_name));
    if (it == instances_.end()) {
      if (instances_.size() >= options_.max_instances) {
        dropped += s.samples.size();
        continue;
      }
      PromConverter::Options co;
      co.engine = options_.engine;
      co.instance = std::string(instance_name);
      co.default_model = options_.model;
      co.model_labels = options_.model_labels;
      co.max_series = options_.max_series_per_instance;
      co.parser = options_.parser;
      it = instances_
               .emplace(std::string(instance_name),
                        std::make_unique<Instance>(std::move(co), *ctx_.interner))
               .first;
      if (instances_gauge_ != nullptr) {
        instances_gauge_->Set(static_cast<double>(instances_.size()));
      }
    }
    Instance& inst = *it->second;
    // The sample line without its value: name{labels} (sorted as sent; `le` kept apart).
    std::string head(name);
    std::string series_key;
    double le = std::numeric_limits<double>::infinity();
    bool first = true;
    for (const RwLabel& l : s.labels) {
      if (l.name == "__name__" || !ValidName(l.name)) continue;
      head += first ? '{' : ',';
      first = false;
      head.append(l.name);
      head += "=\"";
      AppendEscaped(head, l.value);
      head += '"';
      if (l.name == "le") {
        double v = std::numeric_limits<double>::infinity();
        if (l.value != "+Inf" && l.value != "Inf") {
          (void)std::from_chars(l.value.data(), l.value.data() + l.value.size(), v);
        }
        le = v;
      } else {
        series_key.append(l.name);
        series_key += '=';
        series_key.append(l.value);
        series_key += '\xff';
      }
    }
    if (!first) head += '}';
    head += ' ';
    for (const RwSample& sample : s.samples) {
      if (sample.timestamp_ms <= inst.last_converted_ms) {
        ++late;
        continue;
      }
      Group& g = inst.groups[sample.timestamp_ms];
      if (g.entries.empty()) g.first_ms = now_ms;
      Entry& e = g.entries.emplace_back();
      e.family.assign(family);
      e.series = series_key;
      e.le = le;
      e.order = order;
      e.type = type;
      e.line = head;
      AppendValue(e.line, sample.value);
      e.line += '\n';
      ++pending_;
    }
  }
  if (samples_ != nullptr) {
    samples_->Inc(decoder.stats().samples);
    unmapped_->Inc(unmapped);
    late_->Inc(late);
    no_instance_->Inc(no_instance);
    instances_dropped_->Inc(dropped);
  }
  return true;
}

void RemoteWriteSource::Flush(int64_t now_ms, bool all, SourceOutput& out) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, inst_ptr] : instances_) {
    Instance& inst = *inst_ptr;
    // The newest due timestamp; every older group goes with it (timestamp order).
    int64_t due_ts = std::numeric_limits<int64_t>::min();
    for (const auto& [ts, g] : inst.groups) {
      if (all || now_ms - g.first_ms >= options_.flush_delay_ms) due_ts = ts;
    }
    while (!inst.groups.empty() && inst.groups.begin()->first <= due_ts) {
      auto node = inst.groups.extract(inst.groups.begin());
      const int64_t ts = node.key();
      Group& g = node.mapped();
      pending_ -= g.entries.size();
      inst.last_converted_ms = ts;
      std::sort(g.entries.begin(), g.entries.end(), [](const Entry& a, const Entry& b) {
        if (a.family != b.family) return a.family < b.family;
        if (a.order != b.order) return a.order < b.order;
        if (a.series != b.series) return a.series < b.series;
        return a.le < b.le;
      });
      page_.clear();
      std::string_view family;
      for (const Entry& e : g.entries) {
        if (e.family != family) {
          family = e.family;
          page_ += "# TYPE ";
          page_ += e.family;
          page_ += ' ';
          page_ += TypeName(e.type);
          page_ += '\n';
        }
        page_ += e.line;
      }
      EventBatchPtr batch = out.Acquire();
      if (batch == nullptr) return;  // stopping
      batch->publisher = publisher_;
      batch->received_ns = ctx_.clock->MonotonicNs();
      PromConvertStats stats =
          inst.converter.Convert(page_, ts, publisher_, batch->events, &batch->histograms);
      if (events_ != nullptr) {
        events_->Inc(stats.events);
        resets_->Inc(stats.resets);
        unmapped_->Inc(stats.unmapped + stats.not_carried);
      }
      if (batch->events.empty()) {
        out.Release(std::move(batch));
      } else {
        (void)out.Emit(std::move(batch));
      }
    }
  }
}

Status RemoteWriteSource::Run(SourceOutput& out, const std::atomic<bool>& stop) {
  while (!stop.load(std::memory_order_relaxed)) {
    Flush(ctx_.clock->NowMs(), /*all=*/false, out);
    std::this_thread::sleep_for(std::chrono::milliseconds(kMaxWaitMs));
  }
  return Status::Ok();
}

}  // namespace inferscope
