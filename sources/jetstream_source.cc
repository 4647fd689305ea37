#include "sources/jetstream_source.h"

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>
#include <utility>

#include <spdlog/spdlog.h>

#include "clients/cpp/nats_connect.h"
#include "sources/decoder_options.h"
#include "sources/jetstream_register.h"

namespace inferscope {
namespace {

constexpr int64_t kLogIntervalNs = 1'000'000'000;
constexpr int64_t kNsPerMs = 1'000'000;

Status NatsError(std::string_view what, natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string message = std::string(what) + ": " + natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') message += std::string(" (") + last + ")";
  if (jerr != 0) message += " [JetStream error " + std::to_string(static_cast<int>(jerr)) + "]";
  return Status::IOError(message);
}

bool ValidName(std::string_view name) {
  if (name.empty()) return false;
  return std::none_of(name.begin(), name.end(), [](char c) {
    return c == '.' || c == '*' || c == '>' || c == ' ' || c == '\t' || c == '/' || c == '\\';
  });
}

// The stream sequence and the pending count of a JetStream message from its ack subject, without
// allocating: "$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>" (9 tokens),
// or with domain and account hash "$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.
// <cseq>.<ts>.<pending>[.<token>]" (11 or 12 tokens). False when it is not such a subject.
bool ParseAckSubject(std::string_view reply, uint64_t* stream_seq, uint64_t* consumer_seq,
                     uint64_t* pending) {
  std::string_view tokens[12];
  size_t n = 0;
  size_t start = 0;
  for (size_t i = 0; i <= reply.size(); ++i) {
    if (i == reply.size() || reply[i] == '.') {
      if (n == 12) return false;
      tokens[n++] = reply.substr(start, i - start);
      start = i + 1;
    }
  }
  if (n < 9 || tokens[0] != "$JS" || tokens[1] != "ACK") return false;
  const size_t base = n == 9 ? 0 : 2;  // v2 adds domain and account hash after "ACK"
  if (n != 9 && n != 11 && n != 12) return false;
  auto number = [](std::string_view t, uint64_t* out) {
    if (t.empty()) return false;
    uint64_t v = 0;
    for (char c : t) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    *out = v;
    return true;
  };
  return number(tokens[base + 5], stream_seq) && number(tokens[base + 6], consumer_seq) &&
         number(tokens[base + 8], pending);
}

}  // namespace

// libnats' connection callbacks, on its callback thread; they run one at a time, in order, and the
// closed callback is the connection's last.
struct JetStreamConnectionEvents {
  static natsStatus Set(natsOptions* opts, void* closure) {
    natsStatus s = natsOptions_SetDisconnectedCB(opts, &OnDisconnected, closure);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts, &OnReconnected, closure);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(opts, &OnClosed, closure);
    return s;
  }
  static void OnDisconnected(natsConnection* nc, void* closure) {
    static_cast<JetStreamSource*>(closure)->ConnectionChanged(nc, false);
  }
  static void OnReconnected(natsConnection* nc, void* closure) {
    static_cast<JetStreamSource*>(closure)->ConnectionChanged(nc, true);
  }
  static void OnClosed(natsConnection* nc, void* closure) {
    auto* source = static_cast<JetStreamSource*>(closure);
    source->ConnectionChanged(nc, false);
    std::lock_guard<std::mutex> lock(source->conn_mu_);
    source->closed_ = true;
    source->closed_cv_.notify_all();
  }
};

Status JetStreamSource::Options::Validate() const {
  std::vector<std::string> servers;
  std::string url_error;
  if (!client::SplitNatsUrls(url, &servers, &url_error)) {
    return Status::InvalidArgument("jetstream source: url: " + url_error);
  }
  if (!ValidName(stream)) {
    return Status::InvalidArgument(
        "jetstream source: stream is required (a name without '.', '*', '>', '/' or spaces)");
  }
  if (subject_prefix.empty() || subject_prefix.front() == '.' || subject_prefix.back() == '.' ||
      subject_prefix.find_first_of("*> \t") != std::string::npos) {
    return Status::InvalidArgument(
        "jetstream source: subject_prefix must be a subject such as inferscope.in");
  }
  if (partitions.empty()) {
    return Status::InvalidArgument("jetstream source: partitions must list at least one");
  }
  if (std::set<uint32_t>(partitions.begin(), partitions.end()).size() != partitions.size()) {
    return Status::InvalidArgument("jetstream source: partitions are listed twice");
  }
  if (!ValidName(durable)) {
    return Status::InvalidArgument(
        "jetstream source: durable must be a name without '.', '*', '>', '/' or spaces");
  }
  if (fetch_batch < 1 || fetch_batch > 65536) {
    return Status::InvalidArgument("jetstream source: fetch_batch must be between 1 and 65536");
  }
  if (fetch_wait_ms < 1 || fetch_wait_ms > 1000) {
    return Status::InvalidArgument("jetstream source: fetch_wait must be between 1ms and 1s");
  }
  if (ack_wait_ms < 1000) {
    return Status::InvalidArgument("jetstream source: ack_wait must be at least 1s");
  }
  if (max_ack_pending < 1 || max_ack_pending > (int64_t{1} << 30)) {
    return Status::InvalidArgument("jetstream source: max_ack_pending must be between 1 and 2^30");
  }
  return decoder.Validate().WithContext("jetstream source");
}

Result<std::unique_ptr<JetStreamSource>> JetStreamSource::Create(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"url", "stream", "subject_prefix", "partitions", "durable", "fetch_batch", "fetch_wait",
       "ack_wait", "max_ack_pending", "max_future_skew", "max_past", "max_events_per_message",
       "max_string_bytes", "max_message_bytes", "max_publishers", "max_strings_per_publisher"}));
  Options o;
  Result<std::string> url = node.GetString("url");
  if (!url.ok()) return url.status();
  o.url = *url;
  Result<std::string> stream = node.GetString("stream");
  if (!stream.ok()) return stream.status();
  o.stream = *stream;
  Result<std::string> prefix = node.GetString("subject_prefix", o.subject_prefix);
  if (!prefix.ok()) return prefix.status();
  o.subject_prefix = *prefix;
  if (!node.Has("partitions")) return node.Error("partitions", "required: a list such as [0, 1]");
  const YAML::Node list = node.node()["partitions"];
  if (!list.IsSequence()) return node.Error("partitions", "expected a list of partition numbers");
  for (const YAML::Node& p : list) {
    int64_t v = -1;
    try {
      v = p.as<int64_t>();
    } catch (const YAML::Exception&) {
      v = -1;
    }
    if (!p.IsScalar() || v < 0 || v > 65535) {
      return node.Error("partitions", "expected partition numbers between 0 and 65535");
    }
    o.partitions.push_back(static_cast<uint32_t>(v));
  }
  Result<std::string> durable = node.GetString("durable", o.durable);
  if (!durable.ok()) return durable.status();
  o.durable = *durable;
  Result<int64_t> fetch_batch = node.GetInt("fetch_batch", o.fetch_batch, 1, 65536);
  if (!fetch_batch.ok()) return fetch_batch.status();
  o.fetch_batch = static_cast<int>(*fetch_batch);
  Result<int64_t> fetch_wait = node.GetDurationMs("fetch_wait", o.fetch_wait_ms, 1);
  if (!fetch_wait.ok()) return fetch_wait.status();
  o.fetch_wait_ms = *fetch_wait;
  Result<int64_t> ack_wait = node.GetDurationMs("ack_wait", o.ack_wait_ms, 1000);
  if (!ack_wait.ok()) return ack_wait.status();
  o.ack_wait_ms = *ack_wait;
  Result<int64_t> pending = node.GetInt("max_ack_pending", o.max_ack_pending, 1, int64_t{1} << 30);
  if (!pending.ok()) return pending.status();
  o.max_ack_pending = *pending;
  INFERSCOPE_RETURN_IF_ERROR(ParseDecoderOptions(node, &o.decoder));
  Status valid = o.Validate();
  if (!valid.ok()) return node.Error("", valid.message());
  return std::make_unique<JetStreamSource>(std::move(o));
}

std::string JetStreamSource::PositionKey(std::string_view stream, std::string_view subject) {
  return "jetstream:" + std::string(stream) + ":" + std::string(subject);
}

JetStreamSource::JetStreamSource(Options options) : options_(std::move(options)) {}

JetStreamSource::~JetStreamSource() { Close(); }

Status JetStreamSource::Open(const StageContext& ctx) {
  if (ctx.interner == nullptr || ctx.clock == nullptr) {
    return Status::InvalidArgument(
        "jetstream source: the stage context needs an interner and a clock");
  }
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  ctx_ = ctx;
  // The consumers start after the checkpointed stream position, so a publisher's number behind
  // the first one seen since can only be a message stored late (never one applied before): the
  // same messages are applied with or without a restart in between.
  WireDecoderOptions decoder_options = options_.decoder;
  decoder_options.late_before_first = true;
  decoder_ = std::make_unique<WireDecoder>(decoder_options, *ctx.interner, *ctx.clock, ctx.metrics,
                                           ctx.name);
  partitions_.clear();
  partitions_.resize(options_.partitions.size());
  for (size_t i = 0; i < options_.partitions.size(); ++i) {
    Partition& p = partitions_[i];
    p.index = options_.partitions[i];
    p.subject = options_.subject_prefix + "." + std::to_string(p.index);
    p.durable = options_.durable + "-p" + std::to_string(p.index);
    p.key = ctx.interner->Intern(PositionKey(options_.stream, p.subject));
    if (p.key == 0) return Status::Unavailable("jetstream source: string table full");
    ctx.interner->Pin(p.key);  // checkpoints key the position by this name
    p.ring.resize(kRing);
    if (ctx.metrics != nullptr) {
      const Labels labels = {{"stage", ctx.name}, {"partition", std::to_string(p.index)}};
      p.fetched = ctx.metrics->GetCounter("inferscope_jetstream_fetched_messages_total",
                                          "Messages fetched from the partition's consumer", labels);
      p.dead = ctx.metrics->GetCounter(
          "inferscope_jetstream_dead_letters_total",
          "Messages rejected as a whole by the decoder (acknowledged, never redelivered)", labels);
      p.skipped = ctx.metrics->GetCounter(
          "inferscope_jetstream_redelivered_skipped_total",
          "Messages skipped because their stream sequence was applied already", labels);
      p.acks = ctx.metrics->GetCounter("inferscope_jetstream_acks_total",
                                       "AckAll acks sent after durable checkpoints", labels);
      p.acked_seq = ctx.metrics->GetGauge(
          "inferscope_jetstream_acked_sequence",
          "Stream sequence of the newest message acked (its effect is durable)", labels);
      p.lag = ctx.metrics->GetGauge(
          "inferscope_jetstream_lag_messages",
          "Messages pending in the partition's consumer after the last one fetched", labels);
      p.held = ctx.metrics->GetCounter(
          "inferscope_jetstream_held_total",
          "Times the partition stopped before a message refused for a temporary reason "
          "(publisher_limit), to fetch it again a second later",
          labels);
      p.gaps = ctx.metrics->GetCounter(
          "inferscope_jetstream_position_gaps_total",
          "Consumer starts whose position was outside the stream (messages after it purged or "
          "trimmed, or the stream recreated behind it): messages may have been skipped",
          labels);
      p.delivery_gaps = ctx.metrics->GetCounter(
          "inferscope_jetstream_delivery_gaps_total",
          "Deliveries lost on the way (the consumer sequence skipped, e.g. a server died with "
          "them in flight): the consumer was created again after the position to fetch them again",
          labels);
    }
  }
  if (ctx.metrics != nullptr) {
    const Labels labels = {{"stage", ctx.name}};
    disconnects_ = ctx.metrics->GetCounter(
        "inferscope_jetstream_disconnects_total",
        "Losses of the connection to the NATS servers (libnats reconnects by itself)", labels);
    reconnects_ = ctx.metrics->GetCounter("inferscope_jetstream_reconnects_total",
                                          "Reconnections to a NATS server after a loss", labels);
    connected_gauge_ = ctx.metrics->GetGauge(
        "inferscope_jetstream_connected",
        "1 while the source is connected to a NATS server, 0 while it is reconnecting", labels);
    ctx.metrics->AddCallbackGauge(
        "inferscope_jetstream_last_fetch_age_seconds",
        "Seconds since a fetch last completed with the connection up (with messages or an empty "
        "wait); since the source opened when none has",
        labels,
        [this] {
          const int64_t last = last_fetch_ms_.load(std::memory_order_relaxed);
          const int64_t from = last > 0 ? last : opened_ms_;
          return static_cast<double>(std::max<int64_t>(ctx_.clock->NowMs() - from, 0)) / 1000.0;
        },
        this);
  }
  health_ = ctx.services.Get<SourceHealth>();
  opened_ms_ = ctx.clock->NowMs();
  {
    std::lock_guard<std::mutex> lock(conn_mu_);
    closing_ = false;
    closed_ = false;
  }
  natsStatus s = client::ConnectWithFailover(&conn_, options_.url, "inferscope-jetstream-source",
                                             &JetStreamConnectionEvents::Set, this);
  if (s != NATS_OK) {
    conn_ = nullptr;
    return NatsError("jetstream source: cannot connect to " + options_.url, s);
  }
  ConnectionChanged(conn_, true);
  s = natsConnection_JetStream(&js_, conn_, nullptr);
  if (s != NATS_OK) {
    Close();
    return NatsError("jetstream source: no JetStream context", s);
  }
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  s = js_GetStreamInfo(&info, js_, options_.stream.c_str(), nullptr, &jerr);
  if (s != NATS_OK) {
    Close();
    return NatsError("jetstream source: stream '" + options_.stream + "' on " + options_.url +
                         " is not available (create it with subjects " + options_.subject_prefix +
                         ".*)",
                     s, jerr);
  }
  // Only limits retention: a consumer is deleted and created again at each start (the checkpoint
  // is the position), and on an interest stream deleting the only consumer makes the server drop
  // every unacked message; a work-queue stream refuses a consumer that is not AckExplicit.
  const jsRetentionPolicy retention =
      info->Config != nullptr ? info->Config->Retention : js_LimitsPolicy;
  jsStreamInfo_Destroy(info);
  if (retention != js_LimitsPolicy) {
    Close();
    return Status::InvalidArgument(
        "jetstream source: stream '" + options_.stream + "' has " +
        (retention == js_WorkQueuePolicy  ? std::string("work-queue")
         : retention == js_InterestPolicy ? std::string("interest")
                                          : std::to_string(static_cast<int>(retention))) +
        " retention; only limits retention is supported (the source deletes and recreates its "
        "consumers at the checkpointed position, which would drop unacked messages or be "
        "refused): create the stream with limits retention (the default)");
  }
  return Status::Ok();
}

Status JetStreamSource::Restore(const CheckpointReader& reader) {
  return reader.ForEach([this](std::string_view key, std::string_view value) -> Status {
    Result<AppliedSequence> applied = DecodeAppliedSequence(value);
    if (!applied.ok()) {
      return applied.status().WithContext("jetstream source checkpoint: position of '" +
                                          std::string(key) + "'");
    }
    for (Partition& p : partitions_) {
      if (ctx_.interner->Name(p.key) == key) {
        p.applied = applied->seq;
        p.acked = 0;  // not known: the consumer is created again from the position
        return Status::Ok();
      }
    }
    spdlog::warn("source {}: checkpoint holds position {} of '{}', which is not configured here",
                 ctx_.name, applied->seq, key);
    return Status::Ok();
  });
}

Status JetStreamSource::CreateConsumers() {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  bool have_state = false;
  for (Partition& p : partitions_) {
    if (p.sub != nullptr) continue;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (!have_state) {
      jsStreamInfo* info = nullptr;
      natsStatus s = js_GetStreamInfo(&info, js_, options_.stream.c_str(), nullptr, &jerr);
      if (s != NATS_OK) {
        return NatsError("jetstream source: stream '" + options_.stream + "' info", s, jerr);
      }
      first_seq = info->State.FirstSeq;
      last_seq = info->State.LastSeq;
      jsStreamInfo_Destroy(info);
      have_state = true;
    }
    // The position against the stream: messages after it gone (purged, trimmed by limits) or the
    // stream recreated behind it (its new messages up to the position would be skipped). Warned
    // and counted; the consumer still starts after the position.
    if (p.applied > 0 && (first_seq > p.applied + 1 || p.applied > last_seq)) {
      if (p.gaps != nullptr) p.gaps->Inc();
      spdlog::warn(
          "source {}: partition {} ({}) resumes after stream sequence {} but stream '{}' holds "
          "sequences {}..{}: {}",
          ctx_.name, p.index, p.subject, p.applied, options_.stream, first_seq, last_seq,
          p.applied > last_seq ? "the stream was purged or recreated behind the position; its "
                                 "messages up to the position are skipped"
                               : "messages after the position were removed from the stream and "
                                 "are lost");
    }
    // The checkpoint is the position: a consumer left by an earlier run starts elsewhere.
    natsStatus s =
        js_DeleteConsumer(js_, options_.stream.c_str(), p.durable.c_str(), nullptr, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND) {
      return NatsError("jetstream source: cannot delete consumer " + p.durable, s, jerr);
    }
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = p.durable.c_str();
    cc.FilterSubject = p.subject.c_str();
    cc.AckPolicy = js_AckAll;
    cc.AckWait = options_.ack_wait_ms * kNsPerMs;
    cc.MaxAckPending = options_.max_ack_pending;
    if (p.applied > 0) {
      cc.DeliverPolicy = js_DeliverByStartSequence;
      cc.OptStartSeq = p.applied + 1;
    } else {
      cc.DeliverPolicy = js_DeliverAll;
    }
    jsConsumerInfo* ci = nullptr;
    s = js_AddConsumer(&ci, js_, options_.stream.c_str(), &cc, nullptr, &jerr);
    if (s != NATS_OK) {
      return NatsError("jetstream source: cannot create consumer " + p.durable, s, jerr);
    }
    jsConsumerInfo_Destroy(ci);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = options_.stream.c_str();
    so.Consumer = p.durable.c_str();
    s = js_PullSubscribe(&p.sub, js_, p.subject.c_str(), p.durable.c_str(), nullptr, &so, &jerr);
    if (s != NATS_OK) {
      p.sub = nullptr;
      return NatsError("jetstream source: cannot subscribe to consumer " + p.durable, s, jerr);
    }
    p.fetcher = std::make_unique<client::PullFetcher>();
    s = p.fetcher->Open(conn_, options_.stream, p.durable);
    if (s != NATS_OK) {
      natsSubscription_Destroy(p.sub);
      p.sub = nullptr;
      p.fetcher.reset();
      return NatsError("jetstream source: cannot subscribe to an inbox for " + p.durable, s);
    }
    spdlog::info("source {}: partition {} ({}) resumes after stream sequence {}", ctx_.name,
                 p.index, p.subject, p.applied);
  }
  return Status::Ok();
}

void JetStreamSource::ConnectionChanged(natsConnection* nc, bool connected) {
  std::lock_guard<std::mutex> lock(conn_mu_);
  if (closing_) return;  // Close's own disconnection is not a loss
  SourceHealth::Connection& h = health_entry_;
  const bool first = h.stage.empty();
  if (first) {
    h.stage = ctx_.name;
    h.kind = std::string(kName);
    h.endpoint = options_.url;
  }
  char server[256] = {0};
  if (connected && natsConnection_GetConnectedUrl(nc, server, sizeof(server)) != NATS_OK) {
    server[0] = '\0';
  }
  if (!first && connected == connected_.load()) {
    // No change (libnats may repeat an event); the server may have changed.
    if (connected) h.server = server;
    ReportConnectionLocked();
    return;
  }
  const int64_t now = ctx_.clock->NowMs();
  const int64_t was_down_ms = now - h.since_ms;
  connected_.store(connected);
  h.connected = connected;
  h.server = connected ? server : "";
  h.since_ms = now;
  if (connected_gauge_ != nullptr) connected_gauge_->Set(connected ? 1 : 0);
  if (!first) {
    if (connected) {
      ++h.reconnects;
      if (reconnects_ != nullptr) reconnects_->Inc();
      spdlog::warn("source {}: reconnected to NATS server {} after {:.1f} s; fetching again",
                   ctx_.name, server, static_cast<double>(was_down_ms) / 1000.0);
    } else {
      ++h.disconnects;
      if (disconnects_ != nullptr) disconnects_->Inc();
      spdlog::warn(
          "source {}: lost the connection to the NATS servers ({}); not fetching until libnats "
          "has reconnected (it retries without limit)",
          ctx_.name, options_.url);
    }
  }
  ReportConnectionLocked();
}

void JetStreamSource::ReportConnectionLocked() {
  if (health_ == nullptr || health_entry_.stage.empty()) return;
  health_entry_.last_fetch_ms = last_fetch_ms_.load(std::memory_order_relaxed);
  health_->ReportConnection(health_entry_);
}

void JetStreamSource::FetchCompleted(bool with_messages_or_wait) {
  const int64_t now = ctx_.clock->NowMs();
  if (with_messages_or_wait && connected_.load(std::memory_order_relaxed)) {
    last_fetch_ms_.store(now, std::memory_order_relaxed);
  }
  if (now - last_report_ms_ < 1000) return;
  last_report_ms_ = now;
  std::lock_guard<std::mutex> lock(conn_mu_);
  if (!closing_) ReportConnectionLocked();
}

void JetStreamSource::WaitConnected(const std::atomic<bool>& stop) {
  while (!stop.load(std::memory_order_relaxed) && !connected_.load()) {
    FetchCompleted(false);  // keeps the health entry's age current
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void JetStreamSource::EndBatch(Partition& p, EventBatch& batch, uint64_t before,
                               const char* last_reply, uint64_t pending) {
  if (p.applied == before) return;
  if (p.lag != nullptr) p.lag->Set(static_cast<double>(pending));
  AppliedSequence position;
  position.publisher = p.key;
  position.seq = p.applied;
  batch.sequences.push_back(position);
  std::lock_guard<std::mutex> lock(ack_mu_);
  // When the ring is full (checkpoints lag behind 1,024 batches), the newest entry is replaced:
  // the newest applied message stays ackable, so an idle stream is acked to its end.
  Unacked& u =
      p.size < kRing ? p.ring[(p.head + p.size) % kRing] : p.ring[(p.head + kRing - 1) % kRing];
  u.seq = p.applied;
  u.reply.assign(last_reply);  // capacity is kept: no allocation once warmed up
  if (p.size < kRing) ++p.size;
}

void JetStreamSource::AckRedelivered(Partition& p, uint64_t seq, const char* reply) {
  std::lock_guard<std::mutex> lock(ack_mu_);
  if (seq > p.acked || conn_ == nullptr) return;
  // AckAll: acks the durable messages before it too, none after it.
  if (natsConnection_PublishString(conn_, reply, "+ACK") == NATS_OK && p.acks != nullptr) {
    p.acks->Inc();
  }
}

Result<JetStreamSource::FetchOutcome> JetStreamSource::FetchOnce(Partition& p, SourceOutput& out,
                                                                 EventBatchPtr& batch) {
  FetchOutcome outcome;
  client::PulledMsgs list;
  natsStatus s = p.fetcher->Fetch(&list, options_.fetch_batch, options_.fetch_wait_ms);
  FetchCompleted(s == NATS_OK || s == NATS_TIMEOUT);
  if (s == NATS_TIMEOUT) return outcome;
  if (s != NATS_OK) {
    return NatsError("jetstream source: fetch from " + p.durable + " " + p.fetcher->LastError(), s);
  }
  uint64_t before = p.applied;
  const char* last_reply = nullptr;
  uint64_t pending = 0;
  int i = 0;
  for (; i < list.Count(); ++i) {
    natsMsg* msg = list[i];
    const char* reply = natsMsg_GetReply(msg);
    uint64_t seq = 0;
    uint64_t delivery = 0;
    uint64_t msg_pending = 0;
    if (reply == nullptr || !ParseAckSubject(reply, &seq, &delivery, &msg_pending)) {
      // Not a JetStream delivery (nothing to position by): a dead letter.
      if (p.dead != nullptr) p.dead->Inc();
      decoder_->RecordBadFrames(static_cast<size_t>(natsMsg_GetDataLength(msg)));
      continue;
    }
    if (const uint64_t lost = p.fetcher->Lost(delivery); lost > 0) {
      outcome.gap = true;
      if (p.delivery_gaps != nullptr) p.delivery_gaps->Inc();
      spdlog::warn(
          "source {}: {} delivery {} arrived after {}: {} deliveries lost on the way; creating "
          "the consumer again after stream sequence {} to fetch them again",
          ctx_.name, p.subject, delivery, p.fetcher->delivered(), lost, p.applied);
      break;
    }
    if (seq <= p.applied) {
      if (p.skipped != nullptr) p.skipped->Inc();
      AckRedelivered(p, seq, reply);
      continue;
    }
    if (batch->events.empty()) batch->received_ns = ctx_.clock->MonotonicNs();
    const std::string_view payload(natsMsg_GetData(msg),
                                   static_cast<size_t>(natsMsg_GetDataLength(msg)));
    DecodeResult result = decoder_->Decode(payload, *batch, nullptr);
    if (result.message_rejected && result.first_reason == RejectReason::kPublisherLimit) {
      // Temporary (a publisher slot may free up): not a dead letter. The position stays before
      // this message; the caller creates the consumer again there a second later.
      outcome.hold = true;
      if (p.held != nullptr) p.held->Inc();
      const int64_t now = ctx_.clock->MonotonicNs();
      if (last_log_ns_ == 0 || now - last_log_ns_ >= kLogIntervalNs) {
        last_log_ns_ = now;
        spdlog::warn("source {}: {} holds at stream sequence {} (retried in 1s): {}", ctx_.name,
                     p.subject, seq, result.detail());
      }
      ++i;
      break;
    }
    if (result.message_rejected) {
      if (p.dead != nullptr) p.dead->Inc();
      const int64_t now = ctx_.clock->MonotonicNs();
      if (last_log_ns_ == 0 || now - last_log_ns_ >= kLogIntervalNs) {
        last_log_ns_ = now;
        spdlog::warn("source {}: dead letter at stream sequence {} of {}: {}", ctx_.name, seq,
                     p.subject, result.detail());
      }
    }
    p.applied = seq;
    last_reply = reply;
    pending = msg_pending;
    if (batch->events.size() >= kBatchEvents && i + 1 < list.Count()) {
      // Bounded batches: emit this one and go on in a new one.
      EndBatch(p, *batch, before, last_reply, pending);
      before = p.applied;
      if (!out.Emit(std::move(batch))) {
        outcome.closed = true;
        ++i;
        break;
      }
      batch = out.Acquire();
      if (batch == nullptr) {
        outcome.closed = true;
        ++i;
        break;
      }
    }
  }
  if (p.fetched != nullptr) p.fetched->Inc(static_cast<uint64_t>(list.Count()));
  if (batch != nullptr) EndBatch(p, *batch, before, last_reply, pending);
  outcome.messages = list.Count();
  list.Clear();
  return outcome;
}

void JetStreamSource::OnCheckpointDurable(const std::vector<AppliedSequence>& applied) {
  std::lock_guard<std::mutex> lock(ack_mu_);
  if (conn_ == nullptr) return;
  for (const AppliedSequence& a : applied) {
    for (Partition& p : partitions_) {
      if (p.key != a.publisher) continue;
      // The newest recorded message at or below the durable position: AckAll acks everything
      // before it too.
      const Unacked* newest = nullptr;
      while (p.size > 0 && p.ring[p.head].seq <= a.seq) {
        newest = &p.ring[p.head];
        p.head = (p.head + 1) % kRing;
        --p.size;
      }
      if (newest == nullptr || newest->seq <= p.acked) break;
      natsStatus s = natsConnection_PublishString(conn_, newest->reply.c_str(), "+ACK");
      if (s != NATS_OK) {
        // Not fatal: the next checkpoint's ack covers this one (AckAll).
        spdlog::warn("source {}: ack of {} sequence {}: {}", ctx_.name, p.subject, newest->seq,
                     natsStatus_GetText(s));
        break;
      }
      p.acked = newest->seq;
      if (p.acks != nullptr) p.acks->Inc();
      if (p.acked_seq != nullptr) p.acked_seq->Set(static_cast<double>(p.acked));
      break;
    }
  }
}

Status JetStreamSource::Run(SourceOutput& out, const std::atomic<bool>& stop) {
  if (conn_ == nullptr) return Status::Internal("jetstream source: Run before Open");
  // Consumers are created here, after Restore has set the positions. A server that refuses (it
  // may be restarting) is retried every second.
  // A partition whose fetch failed has its consumer created again at its position (the same
  // path, so the restart and a consumer deleted under a running engine resume alike).
  auto ensure_consumers = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      WaitConnected(stop);  // the loss is logged once, by the connection callback
      if (stop.load(std::memory_order_relaxed)) return;
      Status st = CreateConsumers();
      if (st.ok()) return;
      if (connected_.load()) {
        spdlog::warn("source {}: {} (retrying in 1s)", ctx_.name, st.ToString());
      }
      for (int i = 0; i < 10 && !stop.load(std::memory_order_relaxed); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  };
  ensure_consumers();
  EventBatchPtr batch;
  size_t next = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    if (batch == nullptr) {
      batch = out.Acquire();
      if (batch == nullptr) return Status::Ok();  // the engine is stopping
    }
    if (!connected_.load()) {
      // libnats is reconnecting: fetches would only time out (or fail). Wait for it.
      WaitConnected(stop);
      continue;
    }
    Partition& p = partitions_[next];
    next = (next + 1) % partitions_.size();
    Result<FetchOutcome> fetched = FetchOnce(p, out, batch);
    if (fetched.ok() && fetched->messages == 0 && !fetched->closed) {
      fetched = CheckConsumerExists(p);
    }
    if (!fetched.ok()) {
      // A lost connection (libnats reconnects by itself) or a consumer deleted on the server:
      // create the consumer again at the partition's position, at most once a second. A failure
      // from a lost connection is not logged again (the loss was).
      if (connected_.load()) {
        spdlog::warn("source {}: {}; creating the consumer again after stream sequence {}",
                     ctx_.name, fetched.status().ToString(), p.applied);
      }
      natsSubscription_Destroy(p.sub);
      p.sub = nullptr;
      p.fetcher.reset();
      for (int i = 0; i < 10 && !stop.load(std::memory_order_relaxed); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      ensure_consumers();
      continue;
    }
    if (fetched->closed) return Status::Ok();
    if (!batch->events.empty() || !batch->sequences.empty()) {
      // The positions must reach the executor even for a fetch of dead letters only.
      if (!out.Emit(std::move(batch))) return Status::Ok();
    }
    if (fetched->hold || fetched->gap) {
      // Messages after the held one were delivered too: the consumer is created again at the
      // position (before the held message) a second later, so they come again in order. After a
      // delivery gap, at once: the lost messages and those after them come again.
      natsSubscription_Destroy(p.sub);
      p.sub = nullptr;
      p.fetcher.reset();
      if (fetched->hold) {
        for (int i = 0; i < 10 && !stop.load(std::memory_order_relaxed); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
      ensure_consumers();
    }
  }
  if (batch != nullptr) out.Release(std::move(batch));
  return Status::Ok();
}

Result<JetStreamSource::FetchOutcome> JetStreamSource::CheckConsumerExists(Partition& p) {
  constexpr int64_t kCheckEveryMs = 2000;
  const int64_t now = ctx_.clock->NowMs();
  if (now - p.consumer_checked_ms < kCheckEveryMs) return FetchOutcome{};
  p.consumer_checked_ms = now;
  jsConsumerInfo* ci = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s =
      js_GetConsumerInfo(&ci, js_, options_.stream.c_str(), p.durable.c_str(), nullptr, &jerr);
  if (ci != nullptr) jsConsumerInfo_Destroy(ci);
  // Only a consumer known to be gone is an error; a failed check (timeout, election) is not.
  if (s == NATS_NOT_FOUND) {
    return NatsError("jetstream source: consumer " + p.durable + " no longer exists", s, jerr);
  }
  return FetchOutcome{};
}

void JetStreamSource::DestroySubscriptions() {
  for (Partition& p : partitions_) {
    if (p.sub != nullptr) {
      // Destroy, not Unsubscribe: the durable consumer stays on the server.
      natsSubscription_Destroy(p.sub);
      p.sub = nullptr;
      p.fetcher.reset();
    }
  }
}

void JetStreamSource::Close() {
  DestroySubscriptions();
  if (ctx_.metrics != nullptr) ctx_.metrics->RemoveCallbacks(this);
  std::lock_guard<std::mutex> lock(ack_mu_);
  if (js_ != nullptr) {
    jsCtx_Destroy(js_);
    js_ = nullptr;
  }
  if (conn_ != nullptr) {
    natsConnection_FlushTimeout(conn_, 1000);  // the last acks
    {
      std::lock_guard<std::mutex> conn_lock(conn_mu_);
      closing_ = true;
    }
    natsConnection_Destroy(conn_);
    conn_ = nullptr;
    // The callbacks hold this source as their closure: wait for the closed callback, the
    // connection's last, before the source may be destroyed.
    std::unique_lock<std::mutex> conn_lock(conn_mu_);
    if (!closed_cv_.wait_for(conn_lock, std::chrono::seconds(10), [this] { return closed_; })) {
      spdlog::error("source {}: the NATS connection's closed callback did not come within 10 s",
                    ctx_.name);
    }
  }
  if (health_ != nullptr) health_->RemoveConnection(ctx_.name);
}

void RegisterJetStreamSource(Registry& registry) { registry.AddSource<JetStreamSource>(); }

}  // namespace inferscope
