#include "clients/cpp/jetstream_publisher.h"

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "clients/cpp/nats_connect.h"

namespace inferscope::client {

uint32_t JetStreamPartition(std::string_view instance, uint32_t partitions) {
  uint32_t h = 2166136261u;
  for (char c : instance) {
    h ^= static_cast<uint8_t>(c);
    h *= 16777619u;
  }
  return partitions == 0 ? 0 : h % partitions;
}

namespace {

std::string NatsText(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') text += std::string(" (") + last + ")";
  return text;
}

}  // namespace

namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kFirstBackoffMs = 100;
constexpr int64_t kMaxBackoffMs = 2'000;

}  // namespace

// libnats' acknowledgement callback (its reply thread) reaches the outcome queue through this.
struct JetStreamPublisherAccess {
  static void OnAck(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* pub = static_cast<JetStreamPublisher*>(closure);
    const char* id = nullptr;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr) {
      JetStreamPublisher::Outcome o;
      o.msg_id = id;
      o.ok = pa != nullptr && pae == nullptr;
      if (!o.ok && pae != nullptr) {
        // JetStream's own refusals are final except those of a stream without leader.
        const int code = static_cast<int>(pae->ErrCode);
        o.transient = pae->Err != NATS_ERR || code == 0 || code == JSClusterNotAvailErr ||
                      code == JSClusterNotLeaderErr || code == JSRaftGeneralErr;
        o.error = natsStatus_GetText(pae->Err);
        if (pae->ErrText != nullptr && *pae->ErrText != '\0')
          o.error += std::string(": ") + pae->ErrText;
      }
      std::lock_guard<std::mutex> lock(pub->outcomes_mu_);
      pub->outcomes_.push_back(std::move(o));
      pub->outcomes_cv_.notify_one();
    }
    natsMsg_Destroy(msg);
  }
};

JetStreamPublisher::JetStreamPublisher(JetStreamPublisherOptions options)
    : options_(std::move(options)),
      incarnation_(static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch() /
                                         std::chrono::nanoseconds(1))) {
  if (options_.partitions == 0) options_.partitions = 1;
  if (options_.max_in_flight < 1) options_.max_in_flight = 1;
  for (uint32_t p = 0; p < options_.partitions; ++p) {
    encoders_.push_back(
        std::make_unique<BatchEncoder>(options_.publisher_id + "/p" + std::to_string(p)));
    subjects_.push_back(options_.subject_prefix + "." + std::to_string(p));
  }
  states_ =
      std::vector<PartitionState>(options_.partitions);  // not resize: deque is not nothrow-movable
}

JetStreamPublisher::~JetStreamPublisher() {
  if (js_ != nullptr) {
    (void)Flush();
    // No callback may come after this object is gone: wait for what libnats still has pending
    // (copies resent while their first publish was outstanding), then take the rest back.
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 1000;
    // (Only after a timeout: libnats 3.4 crashes listing the pending publishes of a context that
    // never published.)
    if (messages_published_ > 0 && js_PublishAsyncComplete(js_, &po) == NATS_TIMEOUT) {
      natsMsgList pending{};
      if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) natsMsgList_Destroy(&pending);
    }
    jsCtx_Destroy(js_);
  }
  if (conn_ != nullptr) natsConnection_Destroy(conn_);
  if (stats_ != nullptr) natsStatistics_Destroy(stats_);
}

bool JetStreamPublisher::Connect() {
  if (options_.stream.empty() || options_.publisher_id.empty() ||
      options_.publisher_id.size() > 250) {
    last_error_ = "stream and publisher_id (1..250 bytes) are required";
    return false;
  }
  if (options_.ack_timeout_ms < 1 || options_.resend_deadline_ms < 0) {
    last_error_ = "ack_timeout_ms must be >= 1 and resend_deadline_ms >= 0";
    return false;
  }
  std::vector<std::string> servers;
  std::string url_error;
  if (!SplitNatsUrls(options_.url, &servers, &url_error)) {
    last_error_ = "url: " + url_error;
    return false;
  }
  natsStatus s = ConnectWithFailover(&conn_, options_.url, nullptr);
  if (s != NATS_OK) {
    conn_ = nullptr;
    last_error_ = "connect to " + options_.url + ": " + NatsText(s);
    return false;
  }
  s = natsStatistics_Create(&stats_);
  if (s != NATS_OK) {
    stats_ = nullptr;
    last_error_ = "statistics: " + NatsText(s);
    return false;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  // A message may have two publishes outstanding (its first and a resend): libnats' own bound is
  // twice ours, so that it never stalls a resend.
  jo.PublishAsync.MaxPending = 2 * options_.max_in_flight + 16;
  jo.PublishAsync.AckHandler = &JetStreamPublisherAccess::OnAck;
  jo.PublishAsync.AckHandlerClosure = this;
  s = natsConnection_JetStream(&js_, conn_, &jo);
  if (s != NATS_OK) {
    js_ = nullptr;
    last_error_ = "JetStream context: " + NatsText(s);
    return false;
  }
  jsStreamInfo* info = nullptr;
  s = js_GetStreamInfo(&info, js_, options_.stream.c_str(), nullptr, nullptr);
  if (s != NATS_OK) {
    last_error_ = "stream " + options_.stream + ": " + NatsText(s);
    return false;
  }
  // A resend must fall within the stream's duplicate window, or a message whose acknowledgement
  // was lost (stored after all) would be stored twice.
  const int64_t window_ms =
      info->Config != nullptr ? info->Config->Duplicates / kNsPerMs : int64_t{0};
  jsStreamInfo_Destroy(info);
  const int64_t needed_ms = options_.resend_deadline_ms + options_.ack_timeout_ms;
  if (options_.resend_deadline_ms > 0 && window_ms > 0 && window_ms < needed_ms) {
    last_error_ = "stream " + options_.stream + ": its duplicate window (" +
                  std::to_string(window_ms) + " ms) is shorter than resend_deadline_ms + " +
                  "ack_timeout_ms (" + std::to_string(needed_ms) +
                  " ms): a resend could store a message twice; lengthen the window or shorten "
                  "the deadline";
    return false;
  }
  return true;
}

bool JetStreamPublisher::Request(const RequestOutcome& r) {
  const uint32_t p = JetStreamPartition(r.instance, options_.partitions);
  encoders_[p]->AddRequest(r);
  return encoders_[p]->size() >= options_.batch_size ? FlushPartition(p) : true;
}

bool JetStreamPublisher::Gauge(std::string_view instance, std::string_view model,
                               std::string_view name, double value, int64_t time_ms) {
  const uint32_t p = JetStreamPartition(instance, options_.partitions);
  encoders_[p]->AddGauge(instance, model, name, value, time_ms);
  return encoders_[p]->size() >= options_.batch_size ? FlushPartition(p) : true;
}

bool JetStreamPublisher::Connected() const {
  return conn_ != nullptr && natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED;
}

void JetStreamPublisher::Send(InFlight& m) {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = m.msg_id.c_str();
  po.MaxWait = options_.ack_timeout_ms;  // libnats reports the timeout through the callback
  m.epoch = reconnects_seen_;
  const natsStatus s = js_PublishAsync(js_, subjects_[m.partition].c_str(), m.payload.data(),
                                       static_cast<int>(m.payload.size()), &po);
  if (s == NATS_OK) {
    ++m.outstanding;
    return;
  }
  // Not even sent (libnats' own bound reached, or the connection closed): resent like a refusal.
  last_error_ = "publish to " + subjects_[m.partition] + ": " + NatsText(s);
  if (options_.resend_deadline_ms == 0) {
    if (!m.done) {
      m.done = true;
      ++failed_;
      by_id_.erase(m.msg_id);
    }
    return;
  }
  PartitionState& ps = states_[m.partition];
  if (ps.recovering) {
    ps.probing = true;
    ps.drained = false;
    ps.backoff_ms = std::min(ps.backoff_ms * 2, kMaxBackoffMs);
    ps.next_attempt_ns = SteadyNs() + ps.backoff_ms * kNsPerMs;
  }
  StartRecovery(ps);
}

void JetStreamPublisher::StartRecovery(PartitionState& ps) {
  if (options_.resend_deadline_ms == 0 || ps.recovering) return;
  ps.recovering = true;
  ps.probing = true;
  ps.drained = false;
  ps.probe = nullptr;
  ps.backoff_ms = kFirstBackoffMs;
  ps.next_attempt_ns = SteadyNs() + kFirstBackoffMs * kNsPerMs;
}

void JetStreamPublisher::Pump(int64_t wait_ms) {
  {
    std::unique_lock<std::mutex> lock(outcomes_mu_);
    if (outcomes_.empty() && wait_ms > 0) {
      outcomes_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms),
                            [this] { return !outcomes_.empty(); });
    }
    taken_.swap(outcomes_);
  }
  for (const Outcome& o : taken_) {
    auto it = by_id_.find(o.msg_id);
    if (it == by_id_.end()) continue;  // done already (another copy acknowledged, or given up)
    InFlight& m = *it->second;
    if (m.outstanding > 0) --m.outstanding;
    if (o.ok) {
      m.done = true;
      m.acked = true;
      by_id_.erase(it);
      continue;
    }
    last_error_ = "publish to " + subjects_[m.partition] + ": " + o.error;
    if (options_.resend_deadline_ms == 0 || !o.transient) {
      // No resends, or a refusal that will not clear: the message fails at once.
      m.done = true;
      ++failed_;
      by_id_.erase(it);
      continue;
    }
    PartitionState& ps = states_[m.partition];
    if (ps.recovering && (!ps.probing || ps.probe == &m)) {
      // The probe refused again, or a resend after it: probe (again) from the oldest, later.
      ps.probing = true;
      ps.drained = false;
      ps.backoff_ms = std::min(ps.backoff_ms * 2, kMaxBackoffMs);
      ps.next_attempt_ns = SteadyNs() + ps.backoff_ms * kNsPerMs;
    }
    StartRecovery(ps);
  }
  taken_.clear();
  // A reconnection: what was in flight may be lost (acknowledgements included). Every partition
  // with messages in flight resends them, oldest first, before publishing anything new.
  if (conn_ != nullptr && stats_ != nullptr && options_.resend_deadline_ms > 0 &&
      natsConnection_GetStats(conn_, stats_) == NATS_OK) {
    uint64_t reconnects = 0;
    if (natsStatistics_GetCounts(stats_, nullptr, nullptr, nullptr, nullptr, &reconnects) ==
            NATS_OK &&
        reconnects != reconnects_seen_) {
      reconnects_seen_ = reconnects;
      for (PartitionState& ps : states_) {
        if (ps.in_flight.empty()) continue;
        StartRecovery(ps);
        ps.probing = true;
        ps.drained = false;
      }
    }
  }
  const int64_t now = SteadyNs();
  const int64_t deadline_ns = options_.resend_deadline_ms * kNsPerMs;
  const int64_t ack_ns = options_.ack_timeout_ms * kNsPerMs;
  const bool connected = Connected();
  for (PartitionState& ps : states_) {
    // Done messages leave from the front; an unacknowledged one past its deadline, with no
    // publish of it outstanding (or long past it), is given up.
    while (!ps.in_flight.empty()) {
      InFlight& m = *ps.in_flight.front();
      if (!m.done && options_.resend_deadline_ms > 0 && now - m.first_ns >= deadline_ns &&
          (m.outstanding == 0 || now - m.first_ns >= deadline_ns + 2 * ack_ns)) {
        m.done = true;
        ++failed_;
        by_id_.erase(m.msg_id);
      }
      if (!m.done) break;
      if (ps.probe == &m) {
        ps.probe = nullptr;
        // The stream took the probe: the rest follows once, in order (draining).
        if (m.acked && ps.probing) {
          ps.probing = false;
          ps.drained = false;
        }
      }
      ps.in_flight.pop_front();
      --entries_;
    }
    if (!ps.recovering) continue;
    if (ps.in_flight.empty()) {
      ps.recovering = false;  // everything acknowledged (or given up): publish on
      ps.probing = false;
      ps.drained = false;
      ps.probe = nullptr;
      continue;
    }
    if (!connected || now < ps.next_attempt_ns) continue;
    if (ps.probing) {
      // The oldest alone, within its deadline, when no publish of it is outstanding (publishes
      // made before a reconnection count as lost).
      InFlight& oldest = *ps.in_flight.front();
      if (now - oldest.first_ns < deadline_ns &&
          (oldest.outstanding == 0 || oldest.epoch != reconnects_seen_)) {
        Send(oldest);
        ++resent_;
        ps.probe = &oldest;
        ps.next_attempt_ns = now + ps.backoff_ms * kNsPerMs;
      }
      continue;
    }
    if (!ps.drained) {
      // Draining: every unacknowledged message after the probe is resent once, in order (also
      // those whose first publish is still outstanding: it may be lost); a refusal probes again.
      for (const std::unique_ptr<InFlight>& m : ps.in_flight) {
        if (m->done || now - m->first_ns >= deadline_ns || m->outstanding >= 2) continue;
        Send(*m);
        ++resent_;
        if (ps.probing) break;  // libnats refused at once: back to probing
      }
      if (!ps.probing) ps.drained = true;  // wait for the outcomes
      ps.next_attempt_ns = now + ps.backoff_ms * kNsPerMs;
    }
  }
}

bool JetStreamPublisher::PublishRaw(uint32_t partition, std::string_view payload,
                                    std::string_view msg_id) {
  if (js_ == nullptr) {
    last_error_ = "not connected";
    return false;
  }
  if (partition >= options_.partitions) {
    last_error_ = "partition out of range";
    return false;
  }
  std::string id(msg_id);
  if (id.empty()) {
    id = options_.publisher_id + ":" + std::to_string(incarnation_) + ":r" +
         std::to_string(raw_ids_++);
  }
  if (by_id_.count(id) != 0) return true;  // this very message is in flight: the stream has it once
  // Back-pressure: wait while max_in_flight messages are kept, while the partition resends and
  // while the connection is down (libnats would buffer a publish and send it before the resends).
  const int64_t limit =
      SteadyNs() + (options_.resend_deadline_ms + 2 * options_.ack_timeout_ms) * kNsPerMs;
  PartitionState& ps = states_[partition];
  Pump(0);
  while (entries_ >= static_cast<size_t>(options_.max_in_flight) || ps.recovering || !Connected()) {
    if (SteadyNs() >= limit) {
      ++failed_;
      last_error_ =
          "publish to " + subjects_[partition] + ": not published: " +
          (!Connected()    ? std::string("no connection")
           : ps.recovering ? std::string("the partition's earlier messages are still resent")
                           : std::string("max_in_flight messages unacknowledged")) +
          " for " + std::to_string(options_.resend_deadline_ms + 2 * options_.ack_timeout_ms) +
          " ms";
      return false;
    }
    Pump(20);
  }
  auto m = std::make_unique<InFlight>();
  m->partition = partition;
  m->msg_id = std::move(id);
  m->payload.assign(payload);
  m->first_ns = SteadyNs();
  InFlight& ref = *m;
  ps.in_flight.push_back(std::move(m));
  ++entries_;
  by_id_.emplace(ref.msg_id, &ref);
  Send(ref);
  ++messages_published_;
  return true;
}

bool JetStreamPublisher::FlushPartition(uint32_t p) {
  BatchEncoder& e = *encoders_[p];
  const size_t events = e.size();
  if (events == 0) return true;
  const uint64_t seq = e.next_seq();
  const std::string_view payload = e.Finish();
  const std::string id =
      e.publisher_id() + ":" + std::to_string(incarnation_) + ":" + std::to_string(seq);
  if (!PublishRaw(p, payload, id)) return false;
  events_published_ += events;
  return true;
}

bool JetStreamPublisher::Flush() {
  bool ok = true;
  for (uint32_t p = 0; p < options_.partitions; ++p) ok = FlushPartition(p) && ok;
  if (js_ == nullptr) return false;
  // Every message is acknowledged or given up within resend_deadline_ms + 2 * ack_timeout_ms of
  // its first publish (Pump).
  const int64_t limit =
      SteadyNs() + (options_.resend_deadline_ms + 2 * options_.ack_timeout_ms + 1000) * kNsPerMs;
  Pump(0);
  while (entries_ > 0 && SteadyNs() < limit) Pump(20);
  if (entries_ > 0) {
    last_error_ = std::to_string(entries_) + " messages still unacknowledged";
    ok = false;
  }
  if (failed_ != failed_reported_) {
    last_error_ =
        std::to_string(failed_ - failed_reported_) +
        " messages were not stored (refused or not acknowledged by the stream" +
        (options_.resend_deadline_ms > 0 ? " until " + std::to_string(options_.resend_deadline_ms) +
                                               " ms after their first publish"
                                         : std::string()) +
        "); last error: " + last_error_;
    failed_reported_ = failed_;
    ok = false;
  }
  return ok;
}

bool JetStreamPublisher::EnsureStream(const std::string& url, const std::string& stream,
                                      const std::string& subject_prefix, std::string* error,
                                      int replicas) {
  std::vector<std::string> servers;
  std::string url_error;
  if (!SplitNatsUrls(url, &servers, &url_error)) {
    if (error != nullptr) *error = "url: " + url_error;
    return false;
  }
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  natsStatus s = ConnectWithFailover(&conn, url, nullptr);
  if (s == NATS_OK) s = natsConnection_JetStream(&js, conn, nullptr);
  if (s == NATS_OK) {
    jsStreamInfo* info = nullptr;
    if (js_GetStreamInfo(&info, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
      const int existing = info->Config != nullptr ? static_cast<int>(info->Config->Replicas) : 0;
      jsStreamInfo_Destroy(info);
      if (existing != std::max(replicas, 1)) {
        if (error != nullptr) {
          *error = "stream " + stream + " exists with " + std::to_string(existing) +
                   " replica(s), not the " + std::to_string(replicas) +
                   " asked for (change its replicas, or ask for " + std::to_string(existing) + ")";
        }
        jsCtx_Destroy(js);
        natsConnection_Destroy(conn);
        return false;
      }
    } else {
      const std::string subject = subject_prefix + ".*";
      const char* subjects[] = {subject.c_str()};
      jsStreamConfig cfg;
      jsStreamConfig_Init(&cfg);
      cfg.Name = stream.c_str();
      cfg.Subjects = subjects;
      cfg.SubjectsLen = 1;
      cfg.Storage = js_FileStorage;
      cfg.Replicas = replicas;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      s = js_AddStream(&info, js, &cfg, nullptr, &jerr);
      if (s == NATS_OK) jsStreamInfo_Destroy(info);
    }
  }
  if (s != NATS_OK && error != nullptr) *error = "stream " + stream + ": " + NatsText(s);
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return s == NATS_OK;
}

}  // namespace inferscope::client
