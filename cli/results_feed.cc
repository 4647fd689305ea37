#include "cli/results_feed.h"

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "clients/cpp/nats_connect.h"
#include "clients/cpp/nats_pull.h"
#include "pipeline/interner.h"
#include "pipeline/thread_name.h"
#include "sinks/results_codec.h"
#include "state/results_store.h"
#include "state/state_store.h"

namespace inferscope {
namespace {

constexpr int64_t kLogIntervalMs = 5'000;
// Names interned for the panes of one batch; a new table is started past this.
constexpr size_t kMaxNames = 1'000'000;

std::string NatsText(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') text += std::string(" (") + last + ")";
  return text;
}

class JetStreamResultsFeed final : public ResultsFeed {
 public:
  JetStreamResultsFeed(ResultsFeedOptions options, StateStore* store, MetricsRegistry* metrics,
                       const Clock* clock)
      : options_(std::move(options)), store_(store), clock_(clock) {
    const Labels labels = {{"stream", options_.stream}};
    applied_total_ =
        metrics->GetCounter("inferscope_results_feed_messages_total",
                            "Results-stream messages applied to this node's store", labels);
    bad_total_ = metrics->GetCounter(
        "inferscope_results_feed_bad_messages_total",
        "Results-stream messages that could not be decoded (skipped; counted, logged)", labels);
    skipped_panes_total_ = metrics->GetCounter(
        "inferscope_results_feed_skipped_panes_total",
        "Panes not applied because the store holds a version with more events", labels);
    failures_total_ = metrics->GetCounter(
        "inferscope_results_feed_failures_total",
        "Fetches, consumer creations or writes of the results feed that failed", labels);
    delivery_gaps_total_ = metrics->GetCounter(
        "inferscope_results_feed_delivery_gaps_total",
        "Deliveries lost on the way (the consumer sequence skipped, e.g. a server died with them "
        "in flight): the consumer was created again after the position to fetch them again",
        labels);
    metrics->AddCallbackGauge(
        "inferscope_results_feed_pending_messages",
        "Messages in the results stream after the last one this node fetched", labels,
        [this] { return static_cast<double>(pending_.load()); }, this);
    metrics->AddCallbackGauge(
        "inferscope_results_feed_position", "Stream sequence of the last message applied", labels,
        [this] { return static_cast<double>(position_.load()); }, this);
    metrics_ = metrics;
  }

  ~JetStreamResultsFeed() override { Stop(); }

  Status Begin() {
    Result<std::optional<uint64_t>> position = LoadResultsPosition(*store_, options_.durable);
    if (!position.ok()) return position.status();
    position_ = position->value_or(0);
    thread_ = std::thread([this] { Loop(); });
    return Status::Ok();
  }

  void Stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    Disconnect();
    if (metrics_ != nullptr) {
      metrics_->RemoveCallbacks(this);
      metrics_ = nullptr;
    }
  }

  nlohmann::json Health() const override {
    std::string error;
    const int64_t lag = LagMs(&error);
    std::map<std::string, int64_t, std::less<>> nodes;
    if (Result<std::map<std::string, int64_t, std::less<>>> stored = LoadNodeWatermarks(*store_);
        stored.ok()) {
      nodes = std::move(stored).value();
    }
    std::lock_guard<std::mutex> lock(stats_mu_);
    nlohmann::json j = {{"stream", options_.stream},
                        {"subjects", options_.subject_prefix + ".*"},
                        {"consumer", options_.durable},
                        {"connected", connected_},
                        {"position", position_.load()},
                        {"pending_messages", pending_.load()},
                        {"lag_ms", lag >= 0 ? nlohmann::json(lag) : nlohmann::json()},
                        {"applied", applied_},
                        {"batches", batches_},
                        {"skipped_panes", skipped_panes_},
                        {"bad_messages", bad_},
                        {"failures", failures_},
                        {"nodes", nodes}};
    if (!last_error_.empty()) j["last_error"] = last_error_;
    return j;
  }

  int64_t LagMs(std::string* error) const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    if (failing_ && error != nullptr) *error = last_error_;
    if (caught_up_ms_ == 0) return -1;
    return clock_->NowMs() - caught_up_ms_;
  }

 private:
  // Sleeps up to `ms` or until Stop; false when stopping.
  bool Wait(int64_t ms) {
    std::unique_lock<std::mutex> lock(mu_);
    return !cv_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stop_; });
  }
  bool Stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_;
  }

  void Fail(const std::string& what) {
    failures_total_->Inc();
    const int64_t now = clock_->NowMs();
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++failures_;
    failing_ = true;
    last_error_ = what;
    if (now - last_log_ms_ >= kLogIntervalMs) {
      last_log_ms_ = now;
      spdlog::warn("results feed: {} (retrying in 1s)", what);
    }
  }

  void Disconnect() {
    if (sub_ != nullptr) {
      natsSubscription_Destroy(sub_);  // the durable consumer stays on the server
      sub_ = nullptr;
      fetcher_.reset();
    }
    if (js_ != nullptr) {
      jsCtx_Destroy(js_);
      js_ = nullptr;
    }
    if (conn_ != nullptr) {
      natsConnection_Destroy(conn_);
      conn_ = nullptr;
    }
    std::lock_guard<std::mutex> lock(stats_mu_);
    connected_ = false;
  }

  // Connects (once), waits for the stream and creates the consumer after position_.
  Status Subscribe() {
    natsStatus s = NATS_OK;
    if (conn_ == nullptr) {
      s = client::ConnectWithFailover(&conn_, options_.url, "inferscope-query-node");
      if (s != NATS_OK) {
        conn_ = nullptr;
        return Status::IOError("cannot connect to " + options_.url + ": " + NatsText(s));
      }
      s = natsConnection_JetStream(&js_, conn_, nullptr);
      if (s != NATS_OK) {
        js_ = nullptr;
        return Status::IOError("no JetStream context: " + NatsText(s));
      }
    }
    jsErrCode jerr = static_cast<jsErrCode>(0);
    jsStreamInfo* info = nullptr;
    s = js_GetStreamInfo(&info, js_, options_.stream.c_str(), nullptr, &jerr);
    if (s != NATS_OK) {
      return Status::Unavailable("results stream '" + options_.stream +
                                 "' not available yet (an engine's jetstream_results sink "
                                 "creates it): " +
                                 NatsText(s));
    }
    jsStreamInfo_Destroy(info);
    // The store is the position: a consumer left by an earlier run may start elsewhere.
    s = js_DeleteConsumer(js_, options_.stream.c_str(), options_.durable.c_str(), nullptr, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND) {
      return Status::IOError("cannot delete consumer " + options_.durable + ": " + NatsText(s));
    }
    const std::string filter = options_.subject_prefix + ".*";
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = options_.durable.c_str();
    cc.FilterSubject = filter.c_str();
    cc.AckPolicy = js_AckAll;
    cc.AckWait = int64_t{60'000} * 1'000'000;
    cc.MaxAckPending = 1 << 20;
    const uint64_t position = position_.load();
    if (position > 0) {
      cc.DeliverPolicy = js_DeliverByStartSequence;
      cc.OptStartSeq = position + 1;
    } else {
      cc.DeliverPolicy = js_DeliverAll;
    }
    jsConsumerInfo* ci = nullptr;
    s = js_AddConsumer(&ci, js_, options_.stream.c_str(), &cc, nullptr, &jerr);
    if (s != NATS_OK) {
      return Status::IOError("cannot create consumer " + options_.durable + ": " + NatsText(s));
    }
    jsConsumerInfo_Destroy(ci);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = options_.stream.c_str();
    so.Consumer = options_.durable.c_str();
    s = js_PullSubscribe(&sub_, js_, filter.c_str(), options_.durable.c_str(), nullptr, &so, &jerr);
    if (s != NATS_OK) {
      sub_ = nullptr;
      return Status::IOError("cannot subscribe to consumer " + options_.durable + ": " +
                             NatsText(s));
    }
    fetcher_ = std::make_unique<client::PullFetcher>();
    s = fetcher_->Open(conn_, options_.stream, options_.durable);
    if (s != NATS_OK) {
      natsSubscription_Destroy(sub_);
      sub_ = nullptr;
      fetcher_.reset();
      return Status::IOError("cannot subscribe to an inbox for " + options_.durable + ": " +
                             NatsText(s));
    }
    spdlog::info("results feed: stream {} ({}) from sequence {}", options_.stream, filter,
                 position + 1);
    std::lock_guard<std::mutex> lock(stats_mu_);
    connected_ = true;
    return Status::Ok();
  }

  // Decodes one message into batch_ (a bad one is counted and skipped).
  void Decode(natsMsg* msg, uint64_t seq) {
    const std::string_view payload(natsMsg_GetData(msg),
                                   static_cast<size_t>(natsMsg_GetDataLength(msg)));
    Result<ResultsKind> kind =
        ResultsKindOfSubject(natsMsg_GetSubject(msg), options_.subject_prefix);
    Status st = kind.status();
    if (st.ok()) {
      switch (*kind) {
        case ResultsKind::kPane: {
          PaneResult pane;
          st = DecodePaneResult(payload, &pane);
          if (!st.ok()) break;
          WindowSummary& w = batch_.panes.emplace_back();
          w.series.instance = names_->Intern(pane.instance);
          w.series.model = names_->Intern(pane.model);
          w.series.metric = names_->Intern(pane.metric);
          if (w.series.instance == 0 || w.series.model == 0 || w.series.metric == 0) {
            batch_.panes.pop_back();
            st = Status::Unavailable("name table full");
            break;
          }
          w.start_ms = pane.start_ms;
          w.end_ms = pane.end_ms;
          w.max_event_time_ms = pane.max_event_time_ms;
          w.update = pane.update;
          w.agg = std::move(pane.agg);
          break;
        }
        case ResultsKind::kAlert: {
          Result<Alert> a = DecodeAlertResult(payload);
          st = a.status();
          if (a.ok()) batch_.alerts.push_back(std::move(a).value());
          break;
        }
        case ResultsKind::kBottleneck: {
          Result<Bottleneck> b = DecodeBottleneckResult(payload);
          st = b.status();
          if (b.ok()) batch_.bottlenecks.push_back(std::move(b).value());
          break;
        }
        case ResultsKind::kRouting: {
          Result<routing::RoutingWeights> w = DecodeRoutingResult(payload);
          st = w.status();
          if (w.ok()) batch_.weights.push_back(std::move(w).value());
          break;
        }
        case ResultsKind::kDeadLetter: {
          DeadLetterResult d;
          st = DecodeDeadLetterResult(payload, &d);
          if (st.ok()) batch_.dead_letters.emplace_back(d.published_at_ms, std::move(d.json));
          break;
        }
        case ResultsKind::kWatermark: {
          WatermarkResult w;
          st = DecodeWatermarkResult(payload, &w);
          if (st.ok()) {
            int64_t& wm = batch_.node_watermarks[w.node];
            wm = std::max(wm, w.watermark_ms);
          }
          break;
        }
      }
    }
    if (!st.ok()) {
      bad_total_->Inc();
      const int64_t now = clock_->NowMs();
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++bad_;
      if (now - last_log_ms_ >= kLogIntervalMs) {
        last_log_ms_ = now;
        spdlog::warn("results feed: message at stream sequence {} skipped: {}", seq, st.ToString());
      }
    }
  }

  // One fetch, decoded and applied as one batch. False when the consumer must be created again.
  bool FetchAndApply() {
    client::PulledMsgs list;
    natsStatus s = fetcher_->Fetch(&list, options_.fetch_batch, options_.fetch_wait_ms);
    if (s == NATS_TIMEOUT) {
      pending_ = 0;
      std::lock_guard<std::mutex> lock(stats_mu_);
      caught_up_ms_ = clock_->NowMs();
      failing_ = false;
      return true;
    }
    if (s != NATS_OK) {
      Fail("fetch from " + options_.durable + ": " + NatsText(s) + " " + fetcher_->LastError());
      return false;
    }
    if (names_ == nullptr || names_->size() > kMaxNames) names_ = std::make_unique<Interner>();
    batch_.Clear();
    batch_.position_key = options_.durable;
    const uint64_t before = position_.load();
    uint64_t position = before;
    uint64_t pending = 0;
    natsMsg* last = nullptr;
    size_t applied = 0;
    bool gap = false;
    for (int i = 0; i < list.Count(); ++i) {
      natsMsg* msg = list[i];
      jsMsgMetaData* meta = nullptr;
      if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) continue;
      const uint64_t seq = meta->Sequence.Stream;
      const uint64_t delivery = meta->Sequence.Consumer;
      const uint64_t msg_pending = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
      // Deliveries lost on the way: what came before is applied, and the consumer is created
      // again after it, so the lost ones come again.
      if (const uint64_t lost = fetcher_->Lost(delivery); lost > 0) {
        gap = true;
        delivery_gaps_total_->Inc();
        spdlog::warn(
            "results feed: delivery {} arrived after {}: {} deliveries lost on the way; creating "
            "the consumer again after stream sequence {}",
            delivery, fetcher_->delivered(), lost, position);
        break;
      }
      pending = msg_pending;
      last = msg;
      if (seq <= position) continue;  // applied already (a redelivery)
      Decode(msg, seq);
      position = seq;
      ++applied;
    }
    bool ok = true;
    if (position > before) {
      batch_.position = position;
      Result<ApplyReport> report = ApplyResults(*store_, *names_, batch_);
      if (!report.ok()) {
        Fail("applying " + std::to_string(applied) + " messages: " + report.status().ToString());
        ok = false;
      } else {
        position_ = position;
        applied_total_->Inc(applied);
        if (report->panes_skipped > 0) skipped_panes_total_->Inc(report->panes_skipped);
        std::lock_guard<std::mutex> lock(stats_mu_);
        applied_ += applied;
        ++batches_;
        skipped_panes_ += report->panes_skipped;
        failing_ = false;
      }
    }
    if (ok && gap) return false;  // created again after the position (Loop)
    if (ok) {
      pending_ = pending;
      // AckAll: tidies the server's view.
      const char* reply = last != nullptr ? natsMsg_GetReply(last) : nullptr;
      if (reply != nullptr) (void)natsConnection_PublishString(conn_, reply, "+ACK");
      if (pending == 0) {
        std::lock_guard<std::mutex> lock(stats_mu_);
        caught_up_ms_ = clock_->NowMs();
      }
    }
    return ok;
  }

  void Loop() {
    SetThreadName("results-feed");
    while (!Stopping()) {
      if (sub_ == nullptr) {
        Status st = Subscribe();
        if (!st.ok()) {
          Fail(st.ToString());
          if (sub_ != nullptr) {
            natsSubscription_Destroy(sub_);
            sub_ = nullptr;
            fetcher_.reset();
          }
          if (!Wait(1000)) return;
          continue;
        }
      }
      if (!FetchAndApply()) {
        // Created again at the stored position (what failed is fetched again).
        natsSubscription_Destroy(sub_);
        sub_ = nullptr;
        fetcher_.reset();
        if (!Wait(1000)) return;
      }
    }
  }

  const ResultsFeedOptions options_;
  StateStore* const store_;
  const Clock* const clock_;
  MetricsRegistry* metrics_ = nullptr;
  std::unique_ptr<Interner> names_;
  ResultsBatch batch_;
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  natsSubscription* sub_ = nullptr;  // binds the consumer; fetched through fetcher_
  std::unique_ptr<client::PullFetcher> fetcher_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_

  std::atomic<uint64_t> position_{0};
  std::atomic<uint64_t> pending_{0};
  mutable std::mutex stats_mu_;
  bool connected_ = false;
  bool failing_ = false;
  int64_t caught_up_ms_ = 0;
  int64_t last_log_ms_ = 0;
  uint64_t applied_ = 0;
  uint64_t batches_ = 0;
  uint64_t skipped_panes_ = 0;
  uint64_t bad_ = 0;
  uint64_t failures_ = 0;
  std::string last_error_;

  Counter* applied_total_ = nullptr;
  Counter* delivery_gaps_total_ = nullptr;
  Counter* bad_total_ = nullptr;
  Counter* skipped_panes_total_ = nullptr;
  Counter* failures_total_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<ResultsFeed>> ResultsFeed::Start(const ResultsFeedOptions& options,
                                                        StateStore* store, MetricsRegistry* metrics,
                                                        const Clock* clock) {
  INFERSCOPE_RETURN_IF_ERROR(options.Validate());
  if (store == nullptr || store->read_only()) {
    return Status::InvalidArgument("results feed: needs a writable store of the node's own");
  }
  auto feed = std::make_unique<JetStreamResultsFeed>(options, store, metrics, clock);
  INFERSCOPE_RETURN_IF_ERROR(feed->Begin());
  return std::unique_ptr<ResultsFeed>(std::move(feed));
}

}  // namespace inferscope
