#include "cluster/changelog.h"

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <random>

#include <spdlog/spdlog.h>

#include "clients/cpp/nats_pull.h"
#include "pipeline/thread_name.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"

namespace inferscope {
namespace {

constexpr size_t kHeaderBytes = 30;
constexpr uint8_t kLastChunk = 1;

Status NatsError(std::string_view what, natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string message = std::string(what) + ": " + natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') message += std::string(" (") + last + ")";
  if (jerr != 0) message += " [JetStream error " + std::to_string(static_cast<int>(jerr)) + "]";
  return Status::IOError(message);
}

void PutU32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutU64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetBE(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

struct ChunkHeader {
  bool snapshot = false;
  uint64_t id = 0;
  uint32_t index = 0;
  bool last = false;
  uint64_t token = 0;
};

bool ParseHeader(const char* data, size_t len, ChunkHeader* h) {
  if (len < kHeaderBytes || data[0] != 'I' || data[1] != 'C' || data[2] != 'L' || data[3] != 1) {
    return false;
  }
  h->snapshot = data[4] == 1;
  h->id = GetBE(data + 5, 8);
  h->index = static_cast<uint32_t>(GetBE(data + 13, 4));
  h->last = (static_cast<uint8_t>(data[17]) & kLastChunk) != 0;
  h->token = GetBE(data + 18, 8);
  return true;
}

std::string EncodeBody(const std::vector<CheckpointRecord>& records) {
  size_t size = 4;
  for (const CheckpointRecord& r : records)
    size += 9 + r.key.size() + (r.value ? r.value->size() : 0);
  std::string body;
  body.reserve(size);
  PutU32(body, static_cast<uint32_t>(records.size()));
  for (const CheckpointRecord& r : records) {
    body.push_back(r.value ? 1 : 0);
    PutU32(body, static_cast<uint32_t>(r.key.size()));
    body += r.key;
    if (r.value) {
      PutU32(body, static_cast<uint32_t>(r.value->size()));
      body += *r.value;
    }
  }
  return body;
}

Result<std::vector<CheckpointRecord>> DecodeBody(std::string_view body) {
  auto bad = [] { return Status::Corruption("changelog: a checkpoint body is malformed"); };
  if (body.size() < 4) return bad();
  const uint64_t n = GetBE(body.data(), 4);
  size_t at = 4;
  std::vector<CheckpointRecord> records;
  records.reserve(std::min<uint64_t>(n, body.size() / 5));
  for (uint64_t i = 0; i < n; ++i) {
    if (at + 5 > body.size()) return bad();
    const bool put = body[at] == 1;
    const size_t klen = GetBE(body.data() + at + 1, 4);
    at += 5;
    if (at + klen > body.size()) return bad();
    CheckpointRecord r;
    r.key.assign(body.data() + at, klen);
    at += klen;
    if (put) {
      if (at + 4 > body.size()) return bad();
      const size_t vlen = GetBE(body.data() + at, 4);
      at += 4;
      if (at + vlen > body.size()) return bad();
      r.value.emplace(body.data() + at, vlen);
      at += vlen;
    }
    records.push_back(std::move(r));
  }
  if (at != body.size()) return bad();
  return records;
}

// Applies one committed checkpoint to the store's checkpoint table in one atomic write.
Status ApplyCheckpoint(StateStore& store, bool snapshot, std::vector<CheckpointRecord> records) {
  if (snapshot) {
    std::vector<CheckpointRecord> all;
    INFERSCOPE_RETURN_IF_ERROR(
        store.ScanRecords(kCheckpointTable, "", "", [&](std::string_view key, std::string_view) {
          all.push_back(CheckpointRecord{std::string(key), std::nullopt});
          return true;
        }));
    all.insert(all.end(), std::make_move_iterator(records.begin()),
               std::make_move_iterator(records.end()));
    records = std::move(all);
  }
  return WriteCheckpointRecords(store, records, /*sync=*/false);
}

}  // namespace

Status ChangelogOptions::Validate() const {
  auto bad_name = [](std::string_view s) {
    return s.empty() || s.find_first_of(".*> \t/\\") != std::string_view::npos;
  };
  if (bad_name(stream))
    return Status::InvalidArgument(
        "changelog: stream must be a name without '.', '*', '>' or spaces");
  if (subject_prefix.empty() || subject_prefix.front() == '.' || subject_prefix.back() == '.' ||
      subject_prefix.find_first_of("*> \t") != std::string::npos) {
    return Status::InvalidArgument(
        "changelog: subject_prefix must be a subject such as inferscope.ckpt");
  }
  if (replicas < 1 || replicas > 5)
    return Status::InvalidArgument("changelog: replicas must be between 1 and 5");
  if (chunk_bytes < 1024 || chunk_bytes > 900 * 1024) {
    return Status::InvalidArgument("changelog: chunk_bytes must be between 1 KiB and 900 KiB");
  }
  if (snapshot_every < 1)
    return Status::InvalidArgument("changelog: snapshot_every must be at least 1");
  if (max_queue_bytes < chunk_bytes) {
    return Status::InvalidArgument("changelog: max_queue_bytes must be at least chunk_bytes");
  }
  if (publish_timeout_ms < 100)
    return Status::InvalidArgument("changelog: publish_timeout must be at least 100ms");
  return Status::Ok();
}

Status EnsureChangelogStream(jsCtx* js, const ChangelogOptions& options) {
  jsStreamInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, js, options.stream.c_str(), nullptr, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return Status::Ok();
  }
  if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
    return NatsError("changelog: stream " + options.stream, s, jerr);
  }
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const std::string subjects = options.subject_prefix + ".>";
  const char* list[] = {subjects.c_str()};
  cfg.Name = options.stream.c_str();
  cfg.Subjects = list;
  cfg.SubjectsLen = 1;
  cfg.Retention = js_LimitsPolicy;
  cfg.Storage = js_FileStorage;
  cfg.Replicas = options.replicas;
  s = js_AddStream(&info, js, &cfg, nullptr, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return Status::Ok();
  }
  // Another node created it meanwhile.
  if (js_GetStreamInfo(&info, js, options.stream.c_str(), nullptr, nullptr) == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return Status::Ok();
  }
  return NatsError("changelog: creating stream " + options.stream, s, jerr);
}

std::vector<std::string> EncodeChangelogChunks(const ChangelogCheckpoint& checkpoint,
                                               uint64_t token, size_t chunk_bytes) {
  const std::string body = EncodeBody(checkpoint.records);
  std::vector<std::string> out;
  const size_t n = std::max<size_t>(1, (body.size() + chunk_bytes - 1) / chunk_bytes);
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t from = i * chunk_bytes;
    const size_t len = std::min(chunk_bytes, body.size() - std::min(from, body.size()));
    std::string m;
    m.reserve(kHeaderBytes + len);
    m += "ICL";
    m.push_back(1);
    m.push_back(checkpoint.snapshot ? 1 : 0);
    PutU64(m, checkpoint.id);
    PutU32(m, static_cast<uint32_t>(i));
    m.push_back(i + 1 == n ? static_cast<char>(kLastChunk) : 0);
    PutU64(m, token);
    PutU32(m, 0);
    if (len > 0) m.append(body, from, len);
    out.push_back(std::move(m));
  }
  return out;
}

Result<ChangelogRestore> RestoreChangelog(natsConnection* conn, jsCtx* js,
                                          const ChangelogOptions& options, std::string_view slot,
                                          StateStore& store) {
  ChangelogRestore out;
  const std::string subject = options.Subject(slot);
  natsMsg* last = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetLastMsg(&last, js, options.stream.c_str(), subject.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) return out;  // empty: nothing to restore
  if (s != NATS_OK) return NatsError("changelog: last message of " + subject, s, jerr);
  out.last_seq = natsMsg_GetSequence(last);
  natsMsg_Destroy(last);

  // A pull consumer of its own over the subject (deleted at the end; the server removes it after
  // a minute of inactivity should this process die first), fetching a few chunks at a time.
  const std::string consumer =
      "restore-" + std::string(slot) + "-" + std::to_string(std::random_device{}());
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = consumer.c_str();
  cc.FilterSubject = subject.c_str();
  cc.AckPolicy = js_AckExplicit;  // 2.9 pull consumers need acks; never sent (deleted at the end)
  cc.AckWait = int64_t{3600} * 1'000'000'000;
  cc.MaxAckPending = -1;
  cc.DeliverPolicy = js_DeliverAll;
  cc.InactiveThreshold = int64_t{60} * 1'000'000'000;
  jsConsumerInfo* ci = nullptr;
  s = js_AddConsumer(&ci, js, options.stream.c_str(), &cc, nullptr, &jerr);
  if (s != NATS_OK) return NatsError("changelog: reading " + subject, s, jerr);
  jsConsumerInfo_Destroy(ci);
  // Read through PullFetcher, not natsSubscription_Fetch (which can write past its array in
  // libnats 3.4.1: clients/cpp/nats_pull.h).
  client::PullFetcher fetcher;
  s = fetcher.Open(conn, options.stream, consumer);
  if (s != NATS_OK) {
    js_DeleteConsumer(js, options.stream.c_str(), consumer.c_str(), nullptr, nullptr);
    return NatsError("changelog: reading " + subject, s);
  }
  // Chunks fetched and not yet consumed (destroyed by the next fetch or at the end).
  client::PulledMsgs fetched;
  int next = 0;

  // The checkpoint being assembled.
  bool open = false;
  ChunkHeader current;
  std::string body;
  Status result = Status::Ok();
  uint64_t seq = 0;
  while (seq < out.last_seq) {
    if (next == fetched.Count()) {
      next = 0;
      s = fetcher.Fetch(&fetched, 8, options.publish_timeout_ms * 2);
      if (s == NATS_OK && fetched.Count() == 0) s = NATS_TIMEOUT;
    }
    if (s != NATS_OK) {
      result = NatsError("changelog: reading " + subject + " (at sequence " + std::to_string(seq) +
                             " of " + std::to_string(out.last_seq) + ") " + fetcher.LastError(),
                         s);
      break;
    }
    natsMsg* msg = fetched[next++];
    // A consumer's message carries its stream sequence in its metadata (natsMsg_GetSequence is
    // for messages read by sequence).
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
      result = Status::Corruption("changelog: a message of " + subject + " has no metadata");
      break;
    }
    seq = meta->Sequence.Stream;
    const uint64_t delivery = meta->Sequence.Consumer;
    jsMsgMetaData_Destroy(meta);
    // A delivery lost on the way (the server the client reads through died with it in flight)
    // would skip a whole checkpoint — a torn one at best, unseen when it was one chunk — and the
    // later deltas would apply over a state without it. The restore fails instead and is tried
    // again from the start (the slot's start is retried).
    if (const uint64_t lost = fetcher.Lost(delivery); lost > 0) {
      result = Status::Unavailable("changelog: reading " + subject + ": delivery " +
                                   std::to_string(delivery) + " arrived after " +
                                   std::to_string(fetcher.delivered()) + ", " +
                                   std::to_string(lost) + " lost on the way");
      break;
    }
    const char* data = natsMsg_GetData(msg);
    const size_t len = static_cast<size_t>(natsMsg_GetDataLength(msg));
    ++out.messages;
    out.bytes += len;
    ChunkHeader h;
    if (!ParseHeader(data, len, &h)) {
      result = Status::Corruption("changelog: message " + std::to_string(seq) + " of " + subject +
                                  " is not a changelog chunk");
      break;
    }
    if (h.index == 0) {
      if (open) ++out.torn;
      open = true;
      current = h;
      body.clear();
    } else if (!open || h.id != current.id || h.token != current.token ||
               h.snapshot != current.snapshot || h.index != current.index + 1) {
      if (open) ++out.torn;
      open = false;  // a gap: skip to the next chunk 0
      continue;
    }
    current.index = h.index;
    body.append(data + kHeaderBytes, len - kHeaderBytes);
    if (!h.last) continue;
    open = false;
    Result<std::vector<CheckpointRecord>> records = DecodeBody(body);
    if (!records.ok()) {
      result = records.status();
      break;
    }
    result = ApplyCheckpoint(store, current.snapshot, std::move(records).value());
    if (!result.ok()) break;
    ++out.applied;
    if (current.snapshot) ++out.snapshots;
    out.checkpoint = current.id;
    body.clear();
    body.shrink_to_fit();
  }
  if (open) ++out.torn;
  fetched.Clear();
  fetcher.Close();
  js_DeleteConsumer(js, options.stream.c_str(), consumer.c_str(), nullptr, nullptr);
  INFERSCOPE_RETURN_IF_ERROR(result);
  INFERSCOPE_RETURN_IF_ERROR(
      store.ScanRecords(kCheckpointTable, "", "", [&](std::string_view, std::string_view) {
        ++out.records;
        return true;
      }));
  return out;
}

ChangelogWriter::ChangelogWriter(jsCtx* js, ChangelogOptions options, std::string slot,
                                 std::function<void(const Status&)> on_fenced)
    : js_(js),
      options_(std::move(options)),
      slot_(std::move(slot)),
      subject_(options_.Subject(slot_)),
      token_(std::random_device{}() * 0x100000001ull ^ std::random_device{}()),
      on_fenced_(std::move(on_fenced)) {}

ChangelogWriter::~ChangelogWriter() { Stop(false); }

void ChangelogWriter::Start(uint64_t last_seq) {
  last_seq_ = last_seq;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.last_seq = last_seq;
    stop_ = false;
  }
  thread_ = std::thread([this] { Loop(); });
}

void ChangelogWriter::OnCheckpoint(const PendingCheckpoint& c, const StateStore& store) {
  if (fenced_.load()) return;
  size_t delta_bytes = 0;
  for (const CheckpointRecord& r : c.records) {
    delta_bytes += 9 + r.key.size() + (r.value ? r.value->size() : 0);
  }
  bool snapshot = need_snapshot_ ||
                  deltas_since_snapshot_ >= static_cast<uint64_t>(options_.snapshot_every) ||
                  (delta_bytes_since_snapshot_ > options_.snapshot_bytes &&
                   delta_bytes_since_snapshot_ > 2 * last_snapshot_bytes_);
  if (!snapshot) {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_bytes_ + delta_bytes > options_.max_queue_bytes) {
      stats_.dropped += queue_.size();
      snapshot = true;  // replaces what is queued
    }
  }
  Item item;
  item.checkpoint.id = c.id;
  if (snapshot) {
    item.checkpoint.snapshot = true;
    Status st =
        store.ScanRecords(kCheckpointTable, "", "", [&](std::string_view k, std::string_view v) {
          item.checkpoint.records.push_back(CheckpointRecord{std::string(k), std::string(v)});
          item.bytes += 9 + k.size() + v.size();
          return true;
        });
    if (!st.ok()) {
      // Not consistent: try again at the next checkpoint, queue nothing (a delta after a missing
      // one would be wrong).
      spdlog::warn("changelog {}: reading the snapshot: {}", slot_, st.ToString());
      need_snapshot_ = true;
      return;
    }
    need_snapshot_ = false;
    deltas_since_snapshot_ = 0;
    delta_bytes_since_snapshot_ = 0;
    last_snapshot_bytes_ = item.bytes;
  } else {
    item.checkpoint.records = c.records;
    item.bytes = delta_bytes;
    ++deltas_since_snapshot_;
    delta_bytes_since_snapshot_ += delta_bytes;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (item.checkpoint.snapshot) {
      queue_.clear();  // the snapshot holds all of it
      queue_bytes_ = 0;
    }
    queue_bytes_ += item.bytes;
    queue_.push_back(std::move(item));
    stats_.last_observed_id = c.id;
    stats_.queued = queue_.size();
    stats_.queued_bytes = queue_bytes_;
  }
  cv_.notify_all();
}

void ChangelogWriter::Loop() {
  SetThreadName("changelog");
  int64_t backoff_ms = 100;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_ || fenced_.load()) break;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    queue_bytes_ -= item.bytes;
    uploading_ = true;
    lock.unlock();
    const uint64_t first_seq = last_seq_ + 1;
    Status st = Upload(item);
    lock.lock();
    uploading_ = false;
    if (st.ok()) {
      backoff_ms = 100;
      ++stats_.uploaded_checkpoints;
      if (item.checkpoint.snapshot) ++stats_.uploaded_snapshots;
      stats_.uploaded_bytes += item.bytes;
      stats_.last_uploaded_id = item.checkpoint.id;
      stats_.last_seq = last_seq_;
      stats_.queued = queue_.size();
      stats_.queued_bytes = queue_bytes_;
      if (item.checkpoint.snapshot) {
        lock.unlock();
        Purge(first_seq);
        lock.lock();
      }
      cv_.notify_all();
      continue;
    }
    if (fenced_.load()) break;
    ++stats_.failures;
    spdlog::warn("changelog {}: upload of checkpoint {} failed, retried in {} ms: {}", slot_,
                 item.checkpoint.id, backoff_ms, st.ToString());
    // Back at the front, unless a snapshot replaced the queue meanwhile.
    if (queue_.empty() || !queue_.front().checkpoint.snapshot) {
      queue_bytes_ += item.bytes;
      queue_.push_front(std::move(item));
    }
    cv_.wait_for(lock, std::chrono::milliseconds(backoff_ms), [this] { return stop_; });
    backoff_ms = std::min<int64_t>(backoff_ms * 2, 5000);
  }
  cv_.notify_all();
}

Status ChangelogWriter::Upload(const Item& item) {
  for (const std::string& chunk :
       EncodeChangelogChunks(item.checkpoint, token_, options_.chunk_bytes)) {
    INFERSCOPE_RETURN_IF_ERROR(Append(chunk));
  }
  return Status::Ok();
}

Status ChangelogWriter::Append(const std::string& message) {
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = options_.publish_timeout_ms;
  if (last_seq_ == 0) {
    po.ExpectNoMessage = true;
  } else {
    po.ExpectLastSubjectSeq = last_seq_;
  }
  jsPubAck* ack = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_Publish(&ack, js_, subject_.c_str(), message.data(),
                            static_cast<int>(message.size()), &po, &jerr);
  if (s == NATS_OK) {
    last_seq_ = ack->Sequence;
    jsPubAck_Destroy(ack);
    return Status::Ok();
  }
  Status failed = NatsError("changelog: append to " + subject_, s, jerr);
  // The subject's last message decides what happened.
  natsMsg* last = nullptr;
  jsErrCode lerr = static_cast<jsErrCode>(0);
  natsStatus ls =
      js_GetLastMsg(&last, js_, options_.stream.c_str(), subject_.c_str(), nullptr, &lerr);
  if (ls == NATS_OK) {
    const uint64_t seq = natsMsg_GetSequence(last);
    const bool ours = natsMsg_GetDataLength(last) == static_cast<int>(message.size()) &&
                      std::string_view(natsMsg_GetData(last), message.size()) == message;
    natsMsg_Destroy(last);
    if (ours && seq > last_seq_) {
      last_seq_ = seq;  // it was stored; the acknowledgement was lost
      return Status::Ok();
    }
    if (seq != last_seq_) {
      Fence(Status::FailedPrecondition(
          "changelog " + slot_ + ": another writer appended (subject " + subject_ +
          " at sequence " + std::to_string(seq) + ", this writer expected " +
          std::to_string(last_seq_) + "): " + failed.message()));
      return Status::FailedPrecondition("fenced");
    }
    return Status::Unavailable(failed.message());
  }
  if ((ls == NATS_NOT_FOUND || lerr == JSNoMessageFoundErr) && last_seq_ > 0) {
    // Our messages are gone (the subject was purged by someone else): fenced.
    Fence(Status::FailedPrecondition("changelog " + slot_ + ": subject " + subject_ +
                                     " no longer holds this writer's messages"));
    return Status::FailedPrecondition("fenced");
  }
  return Status::Unavailable(failed.message());
}

void ChangelogWriter::Purge(uint64_t below) {
  if (below <= 1) return;
  jsOptions o;
  jsOptions_Init(&o);
  o.Stream.Purge.Subject = subject_.c_str();
  o.Stream.Purge.Sequence = below;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_PurgeStream(js_, options_.stream.c_str(), &o, &jerr);
  if (s != NATS_OK) {
    // Harmless: the subject holds more than it needs until the next snapshot's purge.
    spdlog::warn("changelog {}: purge below {}: {}", slot_, below,
                 NatsError("purge", s, jerr).ToString());
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.purges;
}

void ChangelogWriter::Fence(const Status& why) {
  if (fenced_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.fenced = true;
  }
  spdlog::error("{}", why.ToString());
  if (on_fenced_) on_fenced_(why);
}

void ChangelogWriter::Stop(bool drain, int64_t drain_ms) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (drain) {
      cv_.wait_for(lock, std::chrono::milliseconds(drain_ms),
                   [this] { return (queue_.empty() && !uploading_) || fenced_.load(); });
    }
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

ChangelogWriter::Stats ChangelogWriter::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.fenced = fenced_.load();
  return s;
}

}  // namespace inferscope
