#include "sinks/jetstream_results_sink.h"

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include <spdlog/spdlog.h>

#include "bottlenecks/bottleneck.h"
#include "clients/cpp/nats_connect.h"
#include "routing/published.h"
#include "sinks/jetstream_results_register.h"

namespace inferscope {
namespace {

constexpr int64_t kNsPerMs = 1'000'000;

std::string NatsText(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') text += std::string(" (") + last + ")";
  return text;
}

bool ValidName(std::string_view name) {
  return !name.empty() && std::none_of(name.begin(), name.end(), [](char c) {
    return c == '.' || c == '*' || c == '>' || c == ' ' || c == '\t' || c == '/' || c == '\\';
  });
}

}  // namespace

// The asynchronous publish error callback (libnats' reply thread) reaches the counter through this.
struct JetStreamResultsSinkAccess {
  static void OnError(jsCtx*, jsPubAckErr*, void* closure) {
    static_cast<JetStreamResultsSink*>(closure)->async_failures_.fetch_add(1);
  }
};

Status JetStreamResultsSink::Options::Validate() const {
  std::vector<std::string> servers;
  std::string url_error;
  if (!client::SplitNatsUrls(url, &servers, &url_error)) {
    return Status::InvalidArgument("jetstream_results: url: " + url_error);
  }
  if (!ValidName(stream)) {
    return Status::InvalidArgument(
        "jetstream_results: stream must be a name without '.', '*', '>', '/' or spaces");
  }
  if (subject_prefix.empty() || subject_prefix.front() == '.' || subject_prefix.back() == '.' ||
      subject_prefix.find_first_of("*> \t") != std::string::npos) {
    return Status::InvalidArgument(
        "jetstream_results: subject_prefix must be a subject such as inferscope.results");
  }
  if (node.empty() || node.size() > 255) {
    return Status::InvalidArgument(
        "jetstream_results: node is required: this engine node's name (1..255 bytes), stable "
        "across its restarts");
  }
  if (replicas < 1 || replicas > 5) {
    return Status::InvalidArgument("jetstream_results: replicas must be between 1 and 5");
  }
  if (duplicate_window_ms < 1000) {
    return Status::InvalidArgument("jetstream_results: duplicate_window must be at least 1s");
  }
  if (max_in_flight < 1 || max_in_flight > 1'000'000) {
    return Status::InvalidArgument(
        "jetstream_results: max_in_flight must be between 1 and 1000000");
  }
  if (ack_timeout_ms < 100) {
    return Status::InvalidArgument("jetstream_results: ack_timeout must be at least 100ms");
  }
  if (retry_backoff_ms < 1 || retry_max_backoff_ms < retry_backoff_ms) {
    return Status::InvalidArgument(
        "jetstream_results: retry_backoff must be >= 1ms and retry_max_backoff >= retry_backoff");
  }
  return Status::Ok();
}

Result<std::unique_ptr<JetStreamResultsSink>> JetStreamResultsSink::Create(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"url", "stream", "subject_prefix", "node", "create_stream", "replicas", "duplicate_window",
       "max_in_flight", "ack_timeout", "retry_backoff", "retry_max_backoff"}));
  Options o;
  Result<std::string> url = node.GetString("url");
  if (!url.ok()) return url.status();
  o.url = *url;
  Result<std::string> stream = node.GetString("stream", o.stream);
  if (!stream.ok()) return stream.status();
  o.stream = *stream;
  Result<std::string> prefix = node.GetString("subject_prefix", o.subject_prefix);
  if (!prefix.ok()) return prefix.status();
  o.subject_prefix = *prefix;
  Result<std::string> name = node.GetString("node");
  if (!name.ok()) return name.status();
  o.node = *name;
  Result<bool> create = node.GetBool("create_stream", o.create_stream);
  if (!create.ok()) return create.status();
  o.create_stream = *create;
  Result<int64_t> replicas = node.GetInt("replicas", o.replicas, 1, 5);
  if (!replicas.ok()) return replicas.status();
  o.replicas = static_cast<int>(*replicas);
  Result<int64_t> window = node.GetDurationMs("duplicate_window", o.duplicate_window_ms, 1000);
  if (!window.ok()) return window.status();
  o.duplicate_window_ms = *window;
  Result<int64_t> in_flight = node.GetInt("max_in_flight", o.max_in_flight, 1, 1'000'000);
  if (!in_flight.ok()) return in_flight.status();
  o.max_in_flight = *in_flight;
  Result<int64_t> ack = node.GetDurationMs("ack_timeout", o.ack_timeout_ms, 100);
  if (!ack.ok()) return ack.status();
  o.ack_timeout_ms = *ack;
  Result<int64_t> backoff = node.GetDurationMs("retry_backoff", o.retry_backoff_ms, 1);
  if (!backoff.ok()) return backoff.status();
  o.retry_backoff_ms = *backoff;
  Result<int64_t> max_backoff = node.GetDurationMs("retry_max_backoff", o.retry_max_backoff_ms, 1);
  if (!max_backoff.ok()) return max_backoff.status();
  o.retry_max_backoff_ms = *max_backoff;
  Status valid = o.Validate();
  if (!valid.ok()) return node.Error("", valid.message());
  return std::make_unique<JetStreamResultsSink>(std::move(o));
}

JetStreamResultsSink::JetStreamResultsSink(Options options) : options_(std::move(options)) {}

JetStreamResultsSink::~JetStreamResultsSink() { Close(); }

KindSet JetStreamResultsSink::Accepts() const {
  return KindSet::Of<kind::PaneSummary, kind::Alert, kind::Bottleneck, kind::RoutingWeights,
                     kind::DeadLetter>();
}

Status JetStreamResultsSink::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.interner == nullptr || ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name +
                                   "': the stage context lacks an interner or metrics");
  }
  name_ = ctx.name;
  interner_ = ctx.interner;
  clock_ = ctx.clock != nullptr ? ctx.clock : &SystemClock::Instance();
  subjects_.clear();
  for (int k = 0; k < kNumResultsKinds; ++k) {
    const auto kind = static_cast<ResultsKind>(k);
    subjects_.push_back(options_.subject_prefix + "." + std::string(ResultsKindName(kind)));
    published_[k] = ctx.metrics->GetCounter(
        "inferscope_results_published_total",
        "Results published to the results stream and acknowledged (duplicates included)",
        {{"stage", ctx.name}, {"kind", std::string(ResultsKindName(kind))}});
  }
  const Labels labels = {{"stage", ctx.name}};
  failures_ = ctx.metrics->GetCounter(
      "inferscope_results_publish_failures_total",
      "Results-stream publishes refused or not acknowledged in time (their batch is published "
      "again)",
      labels);
  retries_ = ctx.metrics->GetCounter("inferscope_results_batch_retries_total",
                                     "Result batches published again after a failure", labels);
  given_up_ = ctx.metrics->GetCounter(
      "inferscope_results_given_up_total",
      "Results not published because the engine stopped while their batch was failing", labels);
  invalid_ = ctx.metrics->GetCounter("inferscope_results_invalid_total",
                                     "Results that cannot be encoded (a name too long)", labels);

  natsStatus s = client::ConnectWithFailover(&conn_, options_.url, "inferscope-results-sink");
  if (s != NATS_OK) {
    conn_ = nullptr;
    return Status::IOError("jetstream_results: cannot connect to " + options_.url + ": " +
                           NatsText(s));
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = options_.max_in_flight;
  jo.PublishAsync.ErrHandler = &JetStreamResultsSinkAccess::OnError;
  jo.PublishAsync.ErrHandlerClosure = this;
  s = natsConnection_JetStream(&js_, conn_, &jo);
  if (s != NATS_OK) {
    js_ = nullptr;
    Close();
    return Status::IOError("jetstream_results: no JetStream context: " + NatsText(s));
  }
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  s = js_GetStreamInfo(&info, js_, options_.stream.c_str(), nullptr, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return Status::Ok();
  }
  if (!options_.create_stream) {
    Close();
    return Status::IOError("jetstream_results: stream '" + options_.stream + "' on " +
                           options_.url + " is not available (" + NatsText(s) +
                           "); create it with subjects " + options_.subject_prefix +
                           ".* or set create_stream: true");
  }
  const std::string subject = options_.subject_prefix + ".*";
  const char* subjects[] = {subject.c_str()};
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = options_.stream.c_str();
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.Replicas = options_.replicas;
  cfg.Duplicates = options_.duplicate_window_ms * kNsPerMs;
  s = js_AddStream(&info, js_, &cfg, nullptr, &jerr);
  if (s != NATS_OK) {
    // Another node may have created it meanwhile.
    if (js_GetStreamInfo(&info, js_, options_.stream.c_str(), nullptr, nullptr) != NATS_OK) {
      Close();
      return Status::IOError("jetstream_results: cannot create stream '" + options_.stream +
                             "': " + NatsText(s));
    }
  }
  jsStreamInfo_Destroy(info);
  spdlog::info("sink {}: publishing results of node '{}' to stream {} ({}.*)", name_, options_.node,
               options_.stream, options_.subject_prefix);
  return Status::Ok();
}

Status JetStreamResultsSink::Write(const OutputBatch& batch) {
  if (js_ == nullptr) return Status::Internal("jetstream_results: Write before Open");
  num_messages_ = 0;
  auto next = [this]() -> ResultsMessage& {
    if (num_messages_ == messages_.size()) messages_.emplace_back();
    return messages_[num_messages_++];
  };
  for (const WindowSummary& pane : batch.Get<kind::PaneSummary>()) {
    if (!EncodePaneResult(pane, *interner_, &next()).ok()) {
      --num_messages_;
      invalid_->Inc();
    }
  }
  for (const Alert& a : batch.Get<kind::Alert>()) EncodeAlertResult(a, &next());
  for (const Bottleneck& b : batch.Get<kind::Bottleneck>()) EncodeBottleneckResult(b, &next());
  for (const routing::RoutingWeights& w : batch.Get<kind::RoutingWeights>()) {
    EncodeRoutingResult(w, &next());
  }
  const std::span<const DeadLetter> dead = batch.Get<kind::DeadLetter>();
  if (!dead.empty()) {
    const int64_t now = clock_->NowMs();
    for (const DeadLetter& d : dead) EncodeDeadLetterResult(d, *interner_, now, &next());
  }
  // The watermark after the results it covers (one connection: the stream keeps this order).
  const bool watermark_moved = batch.watermark_ms > last_watermark_;
  if (watermark_moved) EncodeWatermarkResult(options_.node, batch.watermark_ms, &next());
  if (num_messages_ == 0) return Status::Ok();

  int64_t backoff_ms = options_.retry_backoff_ms;
  for (uint64_t attempt = 1;; ++attempt) {
    std::string error;
    if (PublishOnce(&error)) {
      if (attempt > 1) {
        spdlog::info("sink {}: results published after {} attempts", name_, attempt);
      }
      break;
    }
    if (attempt == 1) {
      spdlog::error("sink {}: publishing {} results failed ({}); publishing them again", name_,
                    num_messages_, error);
    }
    std::unique_lock<std::mutex> lock(interrupt_mu_);
    if (interrupt_cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                               [this] { return interrupted_; })) {
      given_up_->Inc(num_messages_);
      return Status::Unavailable("jetstream_results: stopping while " +
                                 std::to_string(num_messages_) +
                                 " results cannot be published: given up: " + error);
    }
    retries_->Inc();
    backoff_ms = std::min(backoff_ms * 2, options_.retry_max_backoff_ms);
  }
  for (size_t i = 0; i < num_messages_; ++i) {
    published_[static_cast<size_t>(messages_[i].kind)]->Inc();
  }
  if (watermark_moved) last_watermark_ = batch.watermark_ms;
  return Status::Ok();
}

bool JetStreamResultsSink::PublishOnce(std::string* error) {
  const uint64_t failed_before = async_failures_.load();
  uint64_t failed_now = 0;
  jsPubOptions po;
  for (size_t i = 0; i < num_messages_; ++i) {
    const ResultsMessage& m = messages_[i];
    jsPubOptions_Init(&po);
    po.MsgId = m.msg_id.c_str();
    // With max_in_flight publishes unacknowledged js_PublishAsync stalls, then times out: wait on,
    // up to ack_timeout in all (back-pressure, not loss).
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.ack_timeout_ms);
    natsStatus s = NATS_OK;
    do {
      s = js_PublishAsync(js_, subjects_[static_cast<size_t>(m.kind)].c_str(), m.payload.data(),
                          static_cast<int>(m.payload.size()), &po);
    } while (s == NATS_TIMEOUT && std::chrono::steady_clock::now() < deadline);
    if (s != NATS_OK) {
      ++failed_now;
      *error = "publish: " + NatsText(s);
      break;
    }
  }
  jsPubOptions_Init(&po);
  po.MaxWait = options_.ack_timeout_ms;
  natsStatus s = js_PublishAsyncComplete(js_, &po);
  if (s != NATS_OK) {
    *error = "waiting for acknowledgements: " + NatsText(s);
    // Unacknowledged publishes stay pending for ever in libnats (no per-publish timeout): take
    // them back, so they free their max_in_flight slots.
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) {
      failed_now += static_cast<uint64_t>(pending.Count);
      natsMsgList_Destroy(&pending);
    }
  }
  const uint64_t refused = async_failures_.load() - failed_before;
  if (refused > 0 && error->empty()) *error = std::to_string(refused) + " publishes refused";
  failed_now += refused;
  if (failed_now > 0 || s != NATS_OK) {
    failures_->Inc(failed_now);
    return false;
  }
  return true;
}

void JetStreamResultsSink::Interrupt() {
  {
    std::lock_guard<std::mutex> lock(interrupt_mu_);
    interrupted_ = true;
  }
  interrupt_cv_.notify_all();
}

void JetStreamResultsSink::Close() {
  if (js_ != nullptr) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 1000;
    (void)js_PublishAsyncComplete(js_, &po);
    jsCtx_Destroy(js_);
    js_ = nullptr;
  }
  if (conn_ != nullptr) {
    natsConnection_Destroy(conn_);
    conn_ = nullptr;
  }
}

void RegisterJetStreamResultsSink(Registry& registry) { registry.AddSink<JetStreamResultsSink>(); }

}  // namespace inferscope
