#include "sources/zmq_source.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <utility>

#include <spdlog/spdlog.h>

#include "pipeline/names.h"
#include "sources/ack_messages.h"
#include "sources/decoder_options.h"

namespace inferscope {
namespace {

constexpr auto kPollTimeout = std::chrono::milliseconds(100);
constexpr int64_t kNackIntervalNs = 50'000'000;
constexpr int64_t kLogIntervalNs = 1'000'000'000;  // at most one rejection log line per second

Status ZmqError(std::string_view what, const zmq::error_t& e) {
  return Status::IOError(std::string(what) + ": " + e.what());
}

}  // namespace

Status ZmqSource::Options::Validate() const {
  if (endpoint.empty()) return Status::InvalidArgument("zmq source: endpoint is required");
  if (rcvhwm < 0) return Status::InvalidArgument("zmq source: rcvhwm must be >= 0");
  if (batch_events < 1) return Status::InvalidArgument("zmq source: batch_events must be >= 1");
  if (batch_delay_ms < 0 || batch_delay_ms > 1000) {
    return Status::InvalidArgument("zmq source: batch_delay must be between 0 and 1s");
  }
  if (curve.enabled() && !binds()) {
    return Status::InvalidArgument(
        "zmq source: curve needs a bound socket (the engine is the CurveZMQ server)");
  }
  INFERSCOPE_RETURN_IF_ERROR(curve.Validate().WithContext("zmq source"));
  return decoder.Validate().WithContext("zmq source");
}

Result<std::unique_ptr<ZmqSource>> ZmqSource::Create(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"endpoint", "mode", "bind", "topics", "rcvhwm", "on_full", "batch_events", "batch_delay",
       "max_future_skew", "max_past", "max_events_per_message", "max_string_bytes",
       "max_message_bytes", "max_publishers", "max_strings_per_publisher", "curve"}));
  Options o;
  Result<std::string> endpoint = node.GetEndpoint("endpoint");
  if (!endpoint.ok()) return endpoint.status();
  o.endpoint = *endpoint;

  Result<std::string> mode = node.GetString("mode", "pull");
  if (!mode.ok()) return mode.status();
  if (*mode == "pull") {
    o.mode = Mode::kPull;
  } else if (*mode == "sub") {
    o.mode = Mode::kSub;
  } else if (*mode == "router") {
    o.mode = Mode::kRouter;
    o.decoder.strict_sequence = true;
  } else {
    return node.Error("mode", "expected pull, sub or router");
  }
  if (node.Has("bind")) {
    Result<bool> bind = node.GetBool("bind");
    if (!bind.ok()) return bind.status();
    o.bind = *bind;
  }
  if (node.Has("topics")) {
    if (o.mode != Mode::kSub) return node.Error("topics", "topics apply to mode sub only");
    const YAML::Node topics = node.node()["topics"];
    if (!topics.IsSequence()) return node.Error("topics", "expected a list of topic prefixes");
    o.topics.clear();
    for (const YAML::Node& t : topics) {
      if (!t.IsScalar()) return node.Error("topics", "expected a list of topic prefixes");
      o.topics.push_back(t.Scalar());
    }
  }
  Result<int64_t> hwm = node.GetInt("rcvhwm", 1000, 0, INT32_MAX);
  if (!hwm.ok()) return hwm.status();
  o.rcvhwm = static_cast<int>(*hwm);

  Result<std::string> on_full = node.GetString("on_full", "block");
  if (!on_full.ok()) return on_full.status();
  if (*on_full == "block") {
    o.on_full = OnFull::kBlock;
  } else if (*on_full == "shed") {
    o.on_full = OnFull::kShed;
  } else {
    return node.Error("on_full", "expected block or shed");
  }
  Result<int64_t> batch_events = node.GetInt("batch_events", 1024, 1, 1 << 24);
  if (!batch_events.ok()) return batch_events.status();
  o.batch_events = static_cast<size_t>(*batch_events);
  Result<int64_t> batch_delay = node.GetDurationMs("batch_delay", o.batch_delay_ms);
  if (!batch_delay.ok()) return batch_delay.status();
  o.batch_delay_ms = *batch_delay;

  INFERSCOPE_RETURN_IF_ERROR(ParseDecoderOptions(node, &o.decoder));
  Result<CurveServerOptions> curve = ParseCurveServerOptions(node, /*require_globs=*/true);
  if (!curve.ok()) return curve.status();
  o.curve = std::move(curve).value();

  Status valid = o.Validate();
  if (!valid.ok()) return node.Error("", valid.message());
  return std::make_unique<ZmqSource>(std::move(o));
}

ZmqSource::ZmqSource(Options options) : options_(std::move(options)) {}

ZmqSource::~ZmqSource() { Close(); }

Status ZmqSource::OpenState(const StageContext& ctx) {
  if (ctx.interner == nullptr || ctx.clock == nullptr) {
    return Status::InvalidArgument("zmq source: the stage context needs an interner and a clock");
  }
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  ctx_ = ctx;
  if (ctx.metrics != nullptr && options_.mode == Mode::kRouter) {
    const Labels labels = {{"stage", ctx.name}};
    acks_sent_ = ctx.metrics->GetCounter("inferscope_source_acks_total",
                                         "Acknowledgements sent to publishers", labels);
    hellos_ = ctx.metrics->GetCounter("inferscope_source_hellos_total", "Hello messages answered",
                                      labels);
    nacks_sent_ = ctx.metrics->GetCounter(
        "inferscope_source_nacks_total",
        "Messages refused for good, each answered with a nack (acknowledged mode)", labels);
  }
  decoder_ = std::make_unique<WireDecoder>(options_.decoder, *ctx.interner, *ctx.clock, ctx.metrics,
                                           ctx.name);
  return Status::Ok();
}

Status ZmqSource::OpenDetached(const StageContext& ctx, ReplySink& replies) {
  if (options_.mode != Mode::kRouter || options_.curve.enabled()) {
    return Status::InvalidArgument("zmq source: OpenDetached needs mode router without curve");
  }
  INFERSCOPE_RETURN_IF_ERROR(OpenState(ctx));
  replies_ = &replies;
  return Status::Ok();
}

void ZmqSource::Deliver(std::span<const std::string_view> frames, EventBatch& batch) {
  // As ReceiveOne: [routing id, topic, payload] is a message; any other frame count is counted as
  // bad_frames (the routing id's bytes aside).
  if (frames.size() != 3) {
    size_t bytes = 0;
    for (size_t i = 1; i < frames.size(); ++i) bytes += frames[i].size();
    decoder_->RecordBadFrames(bytes);
    return;
  }
  HandleMessage(frames[0], frames[1], frames[2], batch);
}

void ZmqSource::FlushAcks() {
  if (ack_ready_.load(std::memory_order_acquire)) SendAcks();
}

Status ZmqSource::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(OpenState(ctx));
  try {
    context_ = std::make_unique<zmq::context_t>(1);
    const zmq::socket_type type = options_.mode == Mode::kPull  ? zmq::socket_type::pull
                                  : options_.mode == Mode::kSub ? zmq::socket_type::sub
                                                                : zmq::socket_type::router;
    socket_ = std::make_unique<zmq::socket_t>(*context_, type);
    if (options_.curve.enabled()) {
      auth_ = std::make_unique<IngestAuth>(options_.curve, ctx.name, ctx.metrics);
      Status started = auth_->Start(*context_);
      if (!started.ok()) {
        Close();
        return started;
      }
      auth_->Configure(*socket_);
    }
    socket_->set(zmq::sockopt::linger, 0);
    socket_->set(zmq::sockopt::rcvhwm, options_.rcvhwm);
    // libzmq assembles a whole frame before the decoder sees it: without a bound, a peer's
    // 800 MB frame is 800 MB of memory. A frame over max_message_bytes + kFrameSlackBytes closes
    // its connection at the frame's header (the peer reconnects); one just over max_message_bytes
    // still reaches the decoder and is counted message_too_large.
    socket_->set(zmq::sockopt::maxmsgsize,
                 static_cast<int64_t>(options_.decoder.max_message_bytes + kFrameSlackBytes));
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) throw zmq::error_t();  // errno says why
    if (options_.mode == Mode::kSub) {
      for (const std::string& topic : options_.topics) {
        socket_->set(zmq::sockopt::subscribe, topic);
      }
    }
    if (options_.binds()) {
      socket_->bind(options_.endpoint);
      endpoint_ = socket_->get(zmq::sockopt::last_endpoint);
    } else {
      socket_->connect(options_.endpoint);
    }
  } catch (const zmq::error_t& e) {
    socket_.reset();
    if (auth_ != nullptr) auth_->Stop();
    context_.reset();
    return ZmqError(
        (options_.binds() ? "zmq source: cannot bind " : "zmq source: cannot connect ") +
            options_.endpoint,
        e);
  }
  if (auth_ == nullptr) {
    spdlog::warn(
        "source {}: ingest on {} is unauthenticated: any client can publish under any publisher "
        "id (set the source's curve option; see docs/PROTOCOL.md, Security)",
        ctx.name, options_.binds() ? endpoint_ : options_.endpoint);
  }
  return Status::Ok();
}

bool ZmqSource::ReceiveOne(EventBatch& batch) {
  const bool router = options_.mode == Mode::kRouter;
  if (router) {
    if (!socket_->recv(identity_, zmq::recv_flags::dontwait)) return false;
    if (!identity_.more() || !socket_->recv(topic_, zmq::recv_flags::dontwait)) {
      decoder_->RecordBadFrames(identity_.size());
      return true;
    }
  } else if (!socket_->recv(topic_, zmq::recv_flags::dontwait)) {
    return false;
  }
  // The frames of a multipart message arrive together, so the rest never blocks.
  if (!topic_.more()) {
    decoder_->RecordBadFrames(topic_.size());
    return true;
  }
  if (!socket_->recv(payload_, zmq::recv_flags::dontwait)) {
    decoder_->RecordBadFrames(topic_.size());
    return true;
  }
  if (payload_.more()) {
    size_t bytes = topic_.size() + payload_.size();
    bool more = true;
    while (more && socket_->recv(extra_, zmq::recv_flags::dontwait)) {
      bytes += extra_.size();
      more = extra_.more();
    }
    decoder_->RecordBadFrames(bytes);
    return true;
  }
  if (auth_ != nullptr) sender_ = auth_->Authorize(payload_);
  HandleMessage(router ? identity_.to_string_view() : std::string_view(), topic_.to_string_view(),
                std::string_view(static_cast<const char*>(payload_.data()), payload_.size()),
                batch);
  return true;
}

void ZmqSource::HandleMessage(std::string_view peer, std::string_view topic,
                              std::string_view payload, EventBatch& batch) {
  const bool router = options_.mode == Mode::kRouter;
  peer_ = peer;
  if (router && topic == "hello") {
    AnswerHello(payload);
    return;
  }
  if (batch.events.empty()) batch.received_ns = ctx_.clock->MonotonicNs();
  DecodeResult result = decoder_->Decode(payload, batch, sender_);
  if (result.first_reason != RejectReason::kNone) LogRejection(result);
  if (result.applied || result.consumed) {
    if (std::optional<AppliedSequence> position = decoder_->Position(result.publisher)) {
      batch.sequences.push_back(*position);
    }
  }
  if (router && result.first_reason == RejectReason::kPublisherLimit &&
      !result.refused_publisher.empty()) {
    // A new id beyond max_publishers: tell the sender (nothing is kept for it, so this is not
    // rate-limited per publisher; it is one small answer per message received).
    NackMessage nack;
    nack.publisher = std::string(result.refused_publisher);
    nack.incarnation = result.incarnation;
    nack.seq = result.seq;
    nack.reason = std::string(RejectReasonName(result.first_reason));
    nack.consumed = false;
    SendNackTo(nack);
  }
  if (router && result.publisher != 0) {
    // Acks go to the peer that sent the publisher's latest message (a reconnected publisher has a
    // new routing id); a stale incarnation does not take them over.
    if (result.sequence != SequenceVerdict::kStale) {
      std::string& peer = peers_[result.publisher];
      if (peer != peer_) peer.assign(peer_);
    }
    RespondToMessage(result);
  }
}

void ZmqSource::RespondToMessage(const DecodeResult& result) {
  // Answers go to the sender of the message (peer_).
  if (result.consumed) {
    // Refused for good, its sequence number consumed: say so at once (the ack follows with the
    // checkpoint), so the publisher reports it instead of resending it forever.
    SendNack(result.publisher, result.incarnation, result.seq,
             RejectReasonName(result.first_reason),
             /*consumed=*/true);
    return;
  }
  if (result.sequence == SequenceVerdict::kStale) {
    SendNack(result.publisher, result.incarnation, result.seq, SequenceVerdictName(result.sequence),
             /*consumed=*/false);
    return;
  }
  // A resent message applied before: its ack may have been lost, so repeat it. A message ahead of
  // the expected one (messages lost in a reconnect, or an engine restart): say where to resume, so
  // the publisher resends at once instead of waiting for its timeout. Both at most every
  // kNackIntervalNs per publisher, since they come in bursts.
  if (result.sequence == SequenceVerdict::kDuplicate ||
      (result.sequence == SequenceVerdict::kGap && !result.applied)) {
    const int64_t now = ctx_.clock->MonotonicNs();
    int64_t& last = last_nack_ns_[result.publisher];
    if (now - last >= kNackIntervalNs) {
      last = now;
      SendAck(result.publisher, result.incarnation, peer_);
    }
  }
}

void ZmqSource::AnswerHello(std::string_view payload) {
  Result<HelloMessage> hello = ParseHello(payload);
  if (!hello.ok()) {
    decoder_->RecordBadFrames(payload.size());
    return;
  }
  if (sender_ != nullptr &&
      !sender_->MayPublishAs(hello->publisher)) {  // unanswered: nothing to learn
    decoder_->RecordRejectedMessage(RejectReason::kUnauthorizedPublisher, payload.size());
    return;
  }
  // Admitting the id here (not just interning it) keeps peers_ within max_publishers too.
  const StringId id = decoder_->AdmitPublisher(hello->publisher);
  if (id == 0) {  // a new id beyond max_publishers: unanswered, like an unauthorised one
    decoder_->RecordRejectedMessage(RejectReason::kPublisherLimit, payload.size());
    return;
  }
  if (hellos_ != nullptr) hellos_->Inc();
  const std::optional<uint64_t> current = decoder_->CurrentIncarnation(id);
  if (!current || hello->incarnation >= *current) peers_[id].assign(peer_);
  SendAck(id, hello->incarnation, peer_);
}

void ZmqSource::SendControl(std::string_view peer, std::string_view kind,
                            const std::string& payload) {
  if (replies_ != nullptr) {
    replies_->OnReply(peer, kind, payload);
    return;
  }
  // A peer that went away is skipped (ROUTER drops what it cannot route); never block here.
  (void)socket_->send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  (void)socket_->send(zmq::buffer(kind), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  (void)socket_->send(zmq::buffer(payload), zmq::send_flags::dontwait);
}

void ZmqSource::SendAck(StringId publisher, uint64_t incarnation, std::string_view peer) {
  AckMessage ack;
  ack.publisher = std::string(ctx_.interner->Name(publisher));
  ack.incarnation = incarnation;
  auto durable = durable_.find(publisher);
  if (durable != durable_.end()) {
    const AppliedSequence& d = durable->second;
    if (d.incarnation == incarnation) {
      ack.ack = d.seq;
    } else if (d.has_prev && d.prev_incarnation == incarnation) {
      ack.ack = d.prev_seq;
    }
  }
  ack.next = decoder_->NextSequence(publisher, incarnation);
  ack.latest = decoder_->CurrentIncarnation(publisher);
  SendControl(peer, "ack", EncodeAck(ack));
  if (acks_sent_ != nullptr) acks_sent_->Inc();
}

void ZmqSource::SendNack(StringId publisher, uint64_t incarnation, uint64_t seq,
                         std::string_view reason, bool consumed) {
  NackMessage nack;
  nack.publisher = std::string(ctx_.interner->Name(publisher));
  nack.incarnation = incarnation;
  nack.seq = seq;
  nack.reason = std::string(reason);
  nack.consumed = consumed;
  nack.latest = decoder_->CurrentIncarnation(publisher);
  SendNackTo(nack);
}

void ZmqSource::SendNackTo(const NackMessage& nack) {
  SendControl(peer_, "nack", EncodeNack(nack));
  if (nacks_sent_ != nullptr) nacks_sent_->Inc();
}

void ZmqSource::SendAcks() {
  std::vector<AppliedSequence> acks;
  {
    std::lock_guard<std::mutex> lock(ack_mu_);
    acks.swap(ack_pending_);
    ack_ready_.store(false, std::memory_order_relaxed);
  }
  for (const AppliedSequence& a : acks) {
    durable_[a.publisher] = a;  // checkpoints become durable in the order they were taken
    auto peer = peers_.find(a.publisher);
    if (peer != peers_.end()) SendAck(a.publisher, a.incarnation, peer->second);
  }
}

void ZmqSource::OnCheckpointDurable(const std::vector<AppliedSequence>& applied) {
  if (options_.mode != Mode::kRouter) return;
  std::lock_guard<std::mutex> lock(ack_mu_);
  ack_pending_.insert(ack_pending_.end(), applied.begin(), applied.end());
  ack_ready_.store(true, std::memory_order_release);
  // Wake Run's poll, so the acks go out now without the source polling at a short interval.
  Wake();
}

void ZmqSource::Wake() {
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
}

void ZmqSource::Interrupt() { Wake(); }

Status ZmqSource::Restore(const CheckpointReader& reader) {
  return reader.ForEach([this](std::string_view publisher, std::string_view value) -> Status {
    Result<AppliedSequence> applied = DecodeAppliedSequence(value);
    if (!applied.ok()) {
      return applied.status().WithContext("zmq source checkpoint: sequence of '" +
                                          std::string(publisher) + "'");
    }
    const StringId id = ctx_.interner->Intern(publisher);
    if (id == 0) return Status::Unavailable("zmq source checkpoint: string table full");
    applied->publisher = id;
    decoder_->RestoreSequence(id, *applied);
    durable_[id] = *applied;
    return Status::Ok();
  });
}

void ZmqSource::LogRejection(const DecodeResult& result) {
  const int64_t now = ctx_.clock->MonotonicNs();
  if (last_log_ns_ != 0 && now - last_log_ns_ < kLogIntervalNs) {
    ++suppressed_logs_;
    return;
  }
  last_log_ns_ = now;
  spdlog::warn(
      "source {}: rejected {} from publisher '{}' seq {}: {} ({} similar lines suppressed)",
      ctx_.name, result.message_rejected ? "message" : "events",
      ctx_.interner->Name(result.publisher), result.seq, result.detail(), suppressed_logs_);
  suppressed_logs_ = 0;
}

void ZmqSource::Shed(const EventBatch& batch) {
  StringId last = 0;
  Counter* counter = nullptr;
  uint64_t run = 0;
  auto flush = [&] {
    if (counter != nullptr && run > 0) counter->Inc(run);
    run = 0;
  };
  for (const Event& e : batch.events) {
    if (counter == nullptr || e.publisher != last) {
      flush();
      last = e.publisher;
      auto [it, inserted] = shed_by_publisher_.try_emplace(last, nullptr);
      if (inserted) {
        MetricsRegistry* metrics = ctx_.metrics;
        static Counter unused;  // metrics are optional in the stage context
        it->second = metrics == nullptr
                         ? &unused
                         : metrics->GetCounter(
                               "inferscope_source_shed_events_total",
                               "Events dropped because the engine queue was full (on_full: shed).",
                               {{"stage", ctx_.name},
                                {"publisher", std::string(ctx_.interner->Name(last))}});
      }
      counter = it->second;
    }
    ++run;
  }
  flush();
}

Status ZmqSource::Run(SourceOutput& out, const std::atomic<bool>& stop) {
  if (socket_ == nullptr) return Status::Internal("zmq source: Run before Open");
  // Receive first and poll only once the socket is drained: under load a message is nearly always
  // waiting, and zmq_poll costs a system call (about 1 us here) per batch for nothing. The batch
  // being filled is kept across polls and given back when Run returns.
  EventBatchPtr batch;
  // batch_delay: whether the batch is waiting for more messages, and until when.
  bool coalescing = false;
  std::chrono::steady_clock::time_point coalesce_until;
  auto give_back = [&] {
    if (batch == nullptr) return;
    // A batch still coalescing when the source stops holds accepted events: hand it on (the
    // operator queue stays open until the sources have returned).
    if (!batch->events.empty() || !batch->sequences.empty()) {
      if (options_.on_full == OnFull::kBlock) {
        (void)out.Emit(std::move(batch));
        return;
      }
      if (out.TryEmit(batch)) return;
      Shed(*batch);
    }
    out.Release(std::move(batch));
  };
  try {
    // The socket, and the eventfd Interrupt (stop) and OnCheckpointDurable (acks due) write.
    zmq::pollitem_t items[2] = {{socket_->handle(), 0, ZMQ_POLLIN, 0},
                                {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
    while (!stop.load(std::memory_order_relaxed)) {
      if (batch == nullptr) {
        batch = out.Acquire();
        if (batch == nullptr) return Status::Ok();  // the engine is stopping
      }
      // Drain what is available without blocking; bound the work by a message count too so that a
      // stream of rejected messages still lets us check `stop`.
      size_t messages = 0;
      bool drained = false;
      while (batch->events.size() < options_.batch_events && messages < 4096) {
        if (!ReceiveOne(*batch)) {
          drained = true;
          break;
        }
        ++messages;
      }
      if (ack_ready_.load(std::memory_order_acquire)) SendAcks();
      // Only a small batch (under batch_events / 8) waits: under load a drain yields big batches,
      // which go on at once as before (the big-message throughput is unchanged).
      if (drained && !batch->events.empty() && options_.batch_delay_ms > 0 &&
          (coalescing || batch->events.size() * 8 < options_.batch_events)) {
        // Coalesce: a small batch waits for more messages until batch_delay after the drain that
        // first put events in it (steady clock: the stage clock may be a test's manual one).
        // Sleeping rather than polling makes one wake-up per delay however many messages come.
        const auto now = std::chrono::steady_clock::now();
        if (!coalescing) {
          coalescing = true;
          coalesce_until = now + std::chrono::milliseconds(options_.batch_delay_ms);
        }
        if (now < coalesce_until) {
          std::this_thread::sleep_for(
              std::min<std::chrono::steady_clock::duration>(coalesce_until - now, kPollTimeout));
          continue;  // drain again into the same batch
        }
      }
      if (!batch->events.empty() || !batch->sequences.empty()) {
        // Emit and a successful TryEmit take the batch (a new one is acquired above); a shed batch
        // is cleared and refilled.
        coalescing = false;
        if (options_.on_full == OnFull::kBlock) {
          if (!out.Emit(std::move(batch))) return Status::Ok();
        } else if (!out.TryEmit(batch)) {
          Shed(*batch);
          batch->Clear();
        }
      }
      if (drained && !stop.load(std::memory_order_relaxed)) {
        // No timeout: nothing but a message, Interrupt or acks due can give this thread work.
        (void)zmq::poll(items, 2, std::chrono::milliseconds(-1));
        if (items[1].revents != 0) {
          uint64_t count = 0;
          (void)!read(wake_fd_, &count, sizeof(count));
        }
      }
    }
  } catch (const zmq::error_t& e) {
    give_back();
    if (e.num() == ETERM) return Status::Ok();
    return ZmqError("zmq source: receive failed", e);
  }
  give_back();
  return Status::Ok();
}

void ZmqSource::Close() {
  if (wake_fd_ >= 0) {
    close(wake_fd_);
    wake_fd_ = -1;
  }
  if (socket_ != nullptr) {
    socket_->close();  // linger is 0: pending messages are dropped
    socket_.reset();
  }
  if (auth_ != nullptr) auth_->Stop();  // its sockets must be closed before the context
  if (context_ != nullptr) {
    context_->close();
    context_.reset();
  }
}

}  // namespace inferscope
