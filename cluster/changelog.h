#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pipeline/checkpoint.h"
#include "pipeline/status.h"

// The NATS C client's handles (nats/nats.h), kept out of this header.
typedef struct __natsConnection natsConnection;
typedef struct __jsCtx jsCtx;

namespace inferscope {

class StateStore;

// The checkpoint changelog of a cluster slot (cli/node.h) on JetStream, after Kafka Streams'
// changelog topics: every durable local checkpoint of the slot's engine is appended, as the
// records it changed (puts and deletes), to the subject `<subject_prefix>.<slot>` of the changelog
// stream, so that another node can rebuild the slot's `checkpoint` table (state/checkpoint_store.h)
// and resume it: open panes, detector baselines, alert lifecycles, routing estimates, sliding
// windows and the jetstream source's positions are all checkpoint records.
//
// Format: one checkpoint is one body, cut into chunks of at most `chunk_bytes` (well under the
// server's 1 MB max payload), one message each. A message is a 30-byte header — "ICL" 0x01, kind
// (0 delta, 1 snapshot), checkpoint id (uint64 BE), chunk index (uint32 BE), flags (bit 0: last
// chunk, the commit), writer token (uint64 BE, random per writer), 4 reserved bytes — then its
// part of the body. The body: record count (uint32 BE), then per record op (1 put, 0 delete),
// key length (uint32 BE), key, and for a put value length (uint32 BE), value. A checkpoint counts
// only once its last chunk is read after chunks 0..n-1 of the same writer and id, in order: a torn
// checkpoint (a writer that died or failed mid-way) is ignored, and the writer's retry starts again
// at chunk 0. A snapshot holds every record of the table and replaces it.
struct ChangelogOptions {
  // The changelog stream. Default "INFERSCOPE_CKPT"; created (limits retention, file storage, no
  // age or size limits: a removed message would break the chain) when absent.
  std::string stream = "INFERSCOPE_CKPT";
  // Slot s is subject "<subject_prefix>.<s>". Default "inferscope.ckpt".
  std::string subject_prefix = "inferscope.ckpt";
  // Replicas of a stream created here. Default 1; 1..5 (3 in a 3-server cluster).
  int replicas = 1;
  // Body bytes per message. Default 256 KiB; 1 KiB..900 KiB.
  size_t chunk_bytes = 256 * 1024;
  // A full snapshot after this many uploaded deltas. Default 100; >= 1.
  int snapshot_every = 100;
  // A snapshot also once the deltas since the last one hold more than this many bytes and more than
  // twice the snapshot's. Default 16 MiB.
  size_t snapshot_bytes = 16 << 20;
  // Deltas waiting for upload (queued while the server is slow or unreachable), in bytes. When the
  // next one would exceed it, the queue is dropped and a snapshot queued instead. Default 64 MiB.
  size_t max_queue_bytes = 64 << 20;
  // How long one append may wait for the stream's acknowledgement. Default 5 s.
  int64_t publish_timeout_ms = 5000;

  Status Validate() const;
  std::string Subject(std::string_view slot) const {
    return subject_prefix + "." + std::string(slot);
  }
};

// Creates the changelog stream (subjects "<subject_prefix>.>") unless it exists.
Status EnsureChangelogStream(jsCtx* js, const ChangelogOptions& options);

// One checkpoint as the changelog carries it.
struct ChangelogCheckpoint {
  bool snapshot = false;
  uint64_t id = 0;
  std::vector<CheckpointRecord> records;
};

// The messages (header + body part) of one checkpoint, each at most 30 + chunk_bytes.
std::vector<std::string> EncodeChangelogChunks(const ChangelogCheckpoint& checkpoint,
                                               uint64_t token, size_t chunk_bytes);

// What RestoreChangelog found.
struct ChangelogRestore {
  uint64_t last_seq = 0;    // stream sequence of the subject's last message (0: empty subject)
  uint64_t checkpoint = 0;  // id of the last committed checkpoint applied (0: none)
  uint64_t applied = 0;     // committed checkpoints applied (snapshots included)
  uint64_t snapshots = 0;   // of which snapshots
  uint64_t torn = 0;        // checkpoints begun and not committed, ignored
  uint64_t messages = 0;    // messages read
  uint64_t bytes = 0;       // payload bytes read
  uint64_t records = 0;     // records in the table afterwards
};

// Rebuilds `store`'s checkpoint table from `subject` of the changelog stream: reads its messages
// in order (a pull consumer of its own, a few chunks per fetch; one checkpoint's body is held at a
// time), applying each committed checkpoint in one atomic write (a snapshot first deletes every
// record of the table), ignoring torn ones. A delivery lost on the way (a skipped consumer
// sequence: a server died with it in flight) fails the restore with Unavailable rather than skip
// a checkpoint; so does a fetch that times out. Returns what it read, including the subject's last
// sequence (the writer's fence: ChangelogWriter::Start). The store must not be in use by an engine.
// `js` is a JetStream context of `conn`.
Result<ChangelogRestore> RestoreChangelog(natsConnection* conn, jsCtx* js,
                                          const ChangelogOptions& options, std::string_view slot,
                                          StateStore& store);

// ChangelogWriter uploads one slot engine's durable checkpoints (Engine::SetCheckpointObserver)
// to its changelog subject, off the hot path.
//
// Fencing: every append carries ExpectLastSubjectSeq = the sequence of the subject's last message
// this writer knows (from RestoreChangelog, then its own acks). If anyone else appended to the
// subject meanwhile — a node that took the slot over — the append is refused and the writer is
// fenced: it uploads nothing more and calls `on_fenced` once (the node then abandons the slot's
// engine). When an append's outcome is unknown (timeout, connection lost), the subject's last
// message decides: this writer's chunk (same token) is taken as stored, the expected sequence
// means not stored (retried), anything else fences. (The first append to an empty subject cannot
// be fenced: the server only checks an expected sequence above 0.)
//
// Snapshots and purge: the first upload of a writer is a snapshot (the slot's new owner takes the
// subject over with its whole state), and again after `snapshot_every` deltas, after
// `snapshot_bytes`, or when the queue overflowed. A snapshot is read from the store in
// OnCheckpoint (the sink thread, while the store holds exactly that checkpoint); once it is
// committed, the subject is purged below its first message, so the subject stays about the size of
// one snapshot plus the deltas since.
//
// Lifecycle: Start → OnCheckpoint calls (sink thread) → Stop (drain: waits, up to a bound, for the
// queue to be uploaded; or not). Concurrency: OnCheckpoint from one thread at a time; stats and
// Stop from any thread; uploads on the writer's own thread.
class ChangelogWriter {
 public:
  struct Stats {
    uint64_t uploaded_checkpoints = 0;
    uint64_t uploaded_snapshots = 0;
    uint64_t uploaded_bytes = 0;
    uint64_t failures = 0;  // appends that failed and were retried
    uint64_t dropped = 0;   // deltas dropped by a queue overflow (replaced by a snapshot)
    uint64_t queued = 0;    // checkpoints waiting
    uint64_t queued_bytes = 0;
    uint64_t last_uploaded_id = 0;
    uint64_t last_observed_id = 0;
    uint64_t purges = 0;
    uint64_t last_seq = 0;
    bool fenced = false;
  };

  // `js` and its connection must outlive the writer.
  ChangelogWriter(jsCtx* js, ChangelogOptions options, std::string slot,
                  std::function<void(const Status&)> on_fenced);
  ~ChangelogWriter();
  ChangelogWriter(const ChangelogWriter&) = delete;
  ChangelogWriter& operator=(const ChangelogWriter&) = delete;

  // Starts the upload thread; `last_seq` is the subject's last sequence (ChangelogRestore).
  void Start(uint64_t last_seq);
  // Queues the durable checkpoint `c` of the engine whose store is `store` (the sink thread).
  void OnCheckpoint(const PendingCheckpoint& c, const StateStore& store);
  // Stops the upload thread. `drain`: first waits up to `drain_ms` for the queue to be uploaded.
  void Stop(bool drain, int64_t drain_ms = 10'000);
  Stats stats() const;
  bool fenced() const { return fenced_.load(); }

 private:
  struct Item {
    ChangelogCheckpoint checkpoint;
    size_t bytes = 0;
  };
  void Loop();
  // Appends every chunk of `item`; Ok, or Unavailable (retry later), or FailedPrecondition
  // (fenced).
  Status Upload(const Item& item);
  Status Append(const std::string& message);
  void Purge(uint64_t below);
  void Fence(const Status& why);

  jsCtx* js_;
  const ChangelogOptions options_;
  const std::string slot_;
  const std::string subject_;
  const uint64_t token_;
  std::function<void(const Status&)> on_fenced_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;  // guarded by mu_
  size_t queue_bytes_ = 0;  // guarded by mu_
  bool stop_ = false;       // guarded by mu_
  bool uploading_ = false;  // guarded by mu_: the thread holds an item
  // OnCheckpoint's own state (sink thread).
  bool need_snapshot_ = true;
  uint64_t deltas_since_snapshot_ = 0;
  size_t delta_bytes_since_snapshot_ = 0;
  size_t last_snapshot_bytes_ = 0;

  Stats stats_;            // guarded by mu_
  uint64_t last_seq_ = 0;  // upload thread
  std::atomic<bool> fenced_{false};
  std::thread thread_;
};

}  // namespace inferscope
