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

// The asynchronous publish error callback (libnats' reply thread) reaches the counter through this.
struct JetStreamPublisherAccess {
  static void OnError(jsCtx*, jsPubAckErr*, void* closure) {
    static_cast<JetStreamPublisher*>(closure)->failed_.fetch_add(1);
  }
};

JetStreamPublisher::JetStreamPublisher(JetStreamPublisherOptions options)
    : options_(std::move(options)),
      incarnation_(static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch() /
                                         std::chrono::nanoseconds(1))) {
  if (options_.partitions == 0) options_.partitions = 1;
  for (uint32_t p = 0; p < options_.partitions; ++p) {
    encoders_.push_back(
        std::make_unique<BatchEncoder>(options_.publisher_id + "/p" + std::to_string(p)));
    subjects_.push_back(options_.subject_prefix + "." + std::to_string(p));
  }
}

JetStreamPublisher::~JetStreamPublisher() {
  if (js_ != nullptr) {
    (void)Flush();
    jsCtx_Destroy(js_);
  }
  if (conn_ != nullptr) natsConnection_Destroy(conn_);
}

bool JetStreamPublisher::Connect() {
  if (options_.stream.empty() || options_.publisher_id.empty() ||
      options_.publisher_id.size() > 250) {
    last_error_ = "stream and publisher_id (1..250 bytes) are required";
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
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = options_.max_in_flight;
  jo.PublishAsync.ErrHandler = &JetStreamPublisherAccess::OnError;
  jo.PublishAsync.ErrHandlerClosure = this;
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
  jsStreamInfo_Destroy(info);
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
  jsPubOptions po;
  jsPubOptions_Init(&po);
  msg_id_.assign(msg_id);
  if (!msg_id_.empty()) po.MsgId = msg_id_.c_str();
  // With max_in_flight publishes unacknowledged, js_PublishAsync waits (StallWait) and then
  // times out: wait on, up to ack_timeout_ms in all (back-pressure, not loss).
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.ack_timeout_ms);
  natsStatus s = NATS_OK;
  do {
    s = js_PublishAsync(js_, subjects_[partition].c_str(), payload.data(),
                        static_cast<int>(payload.size()), &po);
  } while (s == NATS_TIMEOUT && std::chrono::steady_clock::now() < deadline);
  if (s != NATS_OK) {
    failed_.fetch_add(1);
    last_error_ = "publish to " + subjects_[partition] + ": " + NatsText(s);
    return false;
  }
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
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = options_.ack_timeout_ms;
  natsStatus s = js_PublishAsyncComplete(js_, &po);
  if (s != NATS_OK) {
    last_error_ = "waiting for acknowledgements: " + NatsText(s);
    ok = false;
  }
  if (s == NATS_TIMEOUT) {
    // libnats has no per-publish timeout: a publish whose acknowledgement was lost (the stream's
    // leader died with it in flight) stays pending for ever, holding a max_in_flight slot and
    // making every later Flush time out. Take the unacknowledged publishes back and count them
    // failed.
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) {
      failed_.fetch_add(static_cast<uint64_t>(pending.Count));
      natsMsgList_Destroy(&pending);
    }
  }
  const uint64_t failed = failed_.load();
  if (failed != failed_reported_) {
    last_error_ = std::to_string(failed - failed_reported_) +
                  " publishes were refused or not acknowledged by the stream";
    failed_reported_ = failed;
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
