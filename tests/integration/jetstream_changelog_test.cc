// The cluster's building blocks against a real nats-server (cluster/): the lease bucket's
// compare-and-set (of two claimers exactly one wins), the lease clock, and the checkpoint
// changelog — chunked uploads, snapshots and the purge below them, a restore equal to the local
// checkpoint table, a torn last checkpoint ignored, a delivery lost during a restore failing it,
// and a zombie writer fenced.

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cluster/changelog.h"
#include "cluster/leases.h"
#include "pipeline/metrics.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::NatsServer;
using testing::TempDir;
using testing::WaitFor;

// A connection and JetStream context to one server.
struct Client {
  explicit Client(const std::string& url) {
    ok = natsConnection_ConnectTo(&conn, url.c_str()) == NATS_OK &&
         natsConnection_JetStream(&js, conn, nullptr) == NATS_OK;
  }
  ~Client() {
    if (js != nullptr) jsCtx_Destroy(js);
    if (conn != nullptr) natsConnection_Destroy(conn);
  }
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  bool ok = false;
};

std::unique_ptr<StateStore> OpenStore(const std::string& path, MetricsRegistry* metrics) {
  StateStoreOptions options;
  options.path = path;
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, metrics);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(store).value() : nullptr;
}

std::map<std::string, std::string> Table(const StateStore& store) {
  std::map<std::string, std::string> out;
  EXPECT_TRUE(store
                  .ScanRecords(kCheckpointTable, "", "",
                               [&](std::string_view k, std::string_view v) {
                                 out.emplace(k, v);
                                 return true;
                               })
                  .ok());
  return out;
}

// Checkpoint `id`: puts and deletes over 40 keys, some values larger than a chunk.
std::vector<CheckpointRecord> Records(uint64_t id) {
  std::mt19937_64 rng(id * 131 + 7);
  std::vector<CheckpointRecord> out;
  for (int i = 0; i < 12; ++i) {
    CheckpointRecord r;
    r.key = "op windows key-" + std::to_string(rng() % 40);
    if (rng() % 5 != 0) {
      const size_t len = rng() % 7 == 0 ? 5000 + rng() % 3000 : 1 + rng() % 200;
      r.value = std::string(len, static_cast<char>('a' + rng() % 26));
      (*r.value)[0] = static_cast<char>(id);
    }
    out.push_back(std::move(r));
  }
  return out;
}

class ChangelogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(server_.url().empty()) << server_.Log();
    ASSERT_TRUE(client_.ok);
    options_.chunk_bytes = 1024;  // most checkpoints span several messages
    options_.snapshot_every = 4;
    ASSERT_TRUE(EnsureChangelogStream(client_.js, options_).ok());
    local_ = OpenStore(dir_.str() + "/local", &metrics_);
    ASSERT_NE(local_, nullptr);
  }

  // Writes checkpoint `id` (its `records`, by default Records(id)) to the local table and hands it
  // to `writer` as the sink would.
  void Checkpoint(ChangelogWriter& writer, uint64_t id,
                  std::optional<std::vector<CheckpointRecord>> records = std::nullopt) {
    PendingCheckpoint c;
    c.id = id;
    c.records = records ? std::move(*records) : Records(id);
    ASSERT_TRUE(WriteCheckpointRecords(*local_, c.records).ok());
    writer.OnCheckpoint(c, *local_);
  }

  Result<ChangelogRestore> Restore(const std::string& name, std::unique_ptr<StateStore>* out) {
    *out = OpenStore(dir_.str() + "/" + name, &metrics_);
    return RestoreChangelog(client_.conn, client_.js, options_, "a", **out);
  }

  TempDir dir_;
  NatsServer server_{dir_};
  Client client_{server_.url()};
  ChangelogOptions options_;
  MetricsRegistry metrics_;
  std::unique_ptr<StateStore> local_;
};

TEST_F(ChangelogTest, ChunkedSnapshotsAndPurgeRestoreTheLocalTable) {
  ChangelogWriter writer(client_.js, options_, "a", nullptr);
  writer.Start(0);
  // One at a time, so that no delta is replaced by a snapshot queued behind it.
  for (uint64_t id = 1; id <= 11; ++id) {
    Checkpoint(writer, id);
    ASSERT_TRUE(WaitFor([&] { return writer.stats().last_uploaded_id == id; }));
  }
  writer.Stop(/*drain=*/true);
  const ChangelogWriter::Stats stats = writer.stats();
  EXPECT_FALSE(stats.fenced);
  EXPECT_EQ(stats.last_uploaded_id, 11u);
  // The first upload is a snapshot, then one after every 4 deltas: 1, 6, 11.
  EXPECT_EQ(stats.uploaded_snapshots, 3u);
  EXPECT_GE(stats.purges, 1u);
  EXPECT_GT(stats.last_seq, 11u) << "checkpoints were not chunked";

  // The purge left the subject starting at the last snapshot (checkpoint 11): older messages gone.
  natsMsg* first = nullptr;
  EXPECT_NE(js_GetMsg(&first, client_.js, options_.stream.c_str(), 1, nullptr, nullptr), NATS_OK);
  if (first != nullptr) natsMsg_Destroy(first);

  std::unique_ptr<StateStore> restored;
  Result<ChangelogRestore> r = Restore("restored", &restored);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->checkpoint, 11u);
  EXPECT_EQ(r->snapshots, 1u);
  EXPECT_EQ(r->torn, 0u);
  EXPECT_EQ(r->last_seq, stats.last_seq);
  const auto want = Table(*local_);
  EXPECT_FALSE(want.empty());
  EXPECT_EQ(Table(*restored), want);
  EXPECT_EQ(r->records, want.size());
}

TEST_F(ChangelogTest, DeltasAfterTheSnapshotRestoreInOrder) {
  options_.snapshot_every = 100;
  ChangelogWriter writer(client_.js, options_, "a", nullptr);
  writer.Start(0);
  for (uint64_t id = 1; id <= 7; ++id) {
    Checkpoint(writer, id);
    ASSERT_TRUE(WaitFor([&] { return writer.stats().last_uploaded_id == id; }));
  }
  writer.Stop(/*drain=*/true);
  EXPECT_EQ(writer.stats().uploaded_snapshots, 1u);
  EXPECT_EQ(writer.stats().uploaded_checkpoints, 7u);
  std::unique_ptr<StateStore> restored;
  Result<ChangelogRestore> r = Restore("restored", &restored);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->applied, 7u);
  EXPECT_EQ(Table(*restored), Table(*local_));
}

TEST_F(ChangelogTest, ATornLastCheckpointIsIgnored) {
  ChangelogWriter writer(client_.js, options_, "a", nullptr);
  writer.Start(0);
  for (uint64_t id = 1; id <= 3; ++id) Checkpoint(writer, id);
  writer.Stop(/*drain=*/true);
  const auto committed = Table(*local_);
  // Checkpoint 4 begun by a writer that died before its last chunk.
  ChangelogCheckpoint torn;
  torn.id = 4;
  torn.records = Records(4);
  torn.records.push_back(CheckpointRecord{"op windows big", std::string(5000, 'z')});
  const std::vector<std::string> chunks = EncodeChangelogChunks(torn, 99, options_.chunk_bytes);
  ASSERT_GE(chunks.size(), 3u);
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    ASSERT_EQ(js_Publish(nullptr, client_.js, options_.Subject("a").c_str(), chunks[i].data(),
                         static_cast<int>(chunks[i].size()), nullptr, nullptr),
              NATS_OK);
  }
  std::unique_ptr<StateStore> restored;
  Result<ChangelogRestore> r = Restore("restored", &restored);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->checkpoint, 3u);
  EXPECT_EQ(r->torn, 1u);
  EXPECT_EQ(Table(*restored), committed);
}

// Takes one delivery of the next consumer created on `stream`, as a server that died with it in
// flight would: on the server's advisory that the consumer was created it sends pull requests of
// one message (the server cannot tell them from the reader's) until one delivers.
class DeliveryThief {
 public:
  DeliveryThief(const std::string& url, const std::string& stream) : stream_(stream) {
    ok_ = natsConnection_ConnectTo(&conn_, url.c_str()) == NATS_OK &&
          natsConnection_SubscribeSync(
              &advisories_, conn_,
              ("$JS.EVENT.ADVISORY.CONSUMER.CREATED." + stream + ".*").c_str()) == NATS_OK &&
          natsConnection_SubscribeSync(&inbox_, conn_, "test.stolen") == NATS_OK &&
          natsConnection_Flush(conn_) == NATS_OK;
    if (ok_) thread_ = std::thread([this] { Run(); });
  }
  ~DeliveryThief() {
    if (thread_.joinable()) thread_.join();
    if (inbox_ != nullptr) natsSubscription_Destroy(inbox_);
    if (advisories_ != nullptr) natsSubscription_Destroy(advisories_);
    if (conn_ != nullptr) natsConnection_Destroy(conn_);
  }
  bool ok() const { return ok_; }
  // After the reader is done: whether a delivery was taken.
  bool Stolen() {
    if (thread_.joinable()) thread_.join();
    return stolen_;
  }

 private:
  void Run() {
    natsMsg* advisory = nullptr;
    if (natsSubscription_NextMsg(&advisory, advisories_, 10'000) != NATS_OK) return;
    const std::string subject = natsMsg_GetSubject(advisory);
    natsMsg_Destroy(advisory);
    const std::string next =
        "$JS.API.CONSUMER.MSG.NEXT." + stream_ + "." + subject.substr(subject.rfind('.') + 1);
    const std::string pull = "{\"batch\":1,\"no_wait\":true}";
    for (int i = 0; i < 500 && !stolen_; ++i) {
      if (natsConnection_PublishRequest(conn_, next.c_str(), "test.stolen", pull.data(),
                                        static_cast<int>(pull.size())) != NATS_OK) {
        return;
      }
      natsMsg* msg = nullptr;
      if (natsSubscription_NextMsg(&msg, inbox_, 1000) != NATS_OK) return;
      const char* reply = natsMsg_GetReply(msg);
      stolen_ = reply != nullptr && std::string_view(reply).starts_with("$JS.ACK.");
      natsMsg_Destroy(msg);  // else a status: nothing for us yet, or the reader is done
    }
  }

  std::string stream_;
  natsConnection* conn_ = nullptr;
  natsSubscription* advisories_ = nullptr;
  natsSubscription* inbox_ = nullptr;
  bool ok_ = false;
  bool stolen_ = false;
  std::thread thread_;
};

// A delivery lost on the way during a restore (the server the node reads through dies): before,
// the restore skipped the checkpoint it belonged to (counted as torn, or not seen at all when it
// was a one-chunk checkpoint) and applied the later deltas over a state without it, reporting
// success. Now it fails (Unavailable; the slot's start is retried), and a restore that lost
// nothing equals the local table.
TEST_F(ChangelogTest, ADeliveryLostOnTheWayFailsTheRestoreInsteadOfSkippingACheckpoint) {
  options_.snapshot_every = 1000;  // one snapshot, then deltas: each one matters
  ChangelogWriter writer(client_.js, options_, "a", nullptr);
  writer.Start(0);
  // Each checkpoint also writes a key of its own (as a new pane's record is): one skipped shows.
  for (uint64_t id = 1; id <= 40; ++id) {
    std::vector<CheckpointRecord> records = Records(id);
    records.push_back(CheckpointRecord{"op windows pane-" + std::to_string(id), std::string("p")});
    Checkpoint(writer, id, std::move(records));
  }
  writer.Stop(/*drain=*/true);
  ASSERT_EQ(writer.stats().last_uploaded_id, 40u);
  const auto want = Table(*local_);

  int stolen = 0;
  for (int attempt = 0; attempt < 20 && stolen < 3; ++attempt) {
    DeliveryThief thief(server_.url(), options_.stream);
    ASSERT_TRUE(thief.ok());
    std::unique_ptr<StateStore> restored;
    Result<ChangelogRestore> r = Restore("attempt-" + std::to_string(attempt), &restored);
    if (thief.Stolen()) {
      ++stolen;
      EXPECT_FALSE(r.ok()) << "a delivery was lost and the restore reported success: applied "
                           << r->applied << " of 40 checkpoints, torn " << r->torn
                           << ", table equal: " << (Table(*restored) == want);
    } else {
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(Table(*restored), want);
    }
  }
  ASSERT_GT(stolen, 0) << "the restores read every delivery before the thief's pull requests";
  std::unique_ptr<StateStore> restored;
  Result<ChangelogRestore> r = Restore("final", &restored);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->applied, 40u);
  EXPECT_EQ(Table(*restored), want);
}

TEST_F(ChangelogTest, AZombieWriterIsFencedWhenANewOwnerAppended) {
  std::atomic<int> fenced{0};
  ChangelogWriter zombie(client_.js, options_, "a", [&](const Status&) { ++fenced; });
  zombie.Start(0);
  Checkpoint(zombie, 1);
  Checkpoint(zombie, 2);
  ASSERT_TRUE(WaitFor([&] { return zombie.stats().last_uploaded_id == 2; }));

  // The new owner restores (and so learns the subject's last sequence) and appends its own.
  std::unique_ptr<StateStore> owner_store;
  Result<ChangelogRestore> r = Restore("owner", &owner_store);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ChangelogWriter owner(client_.js, options_, "a", nullptr);
  owner.Start(r->last_seq);
  PendingCheckpoint c;
  c.id = 1;
  c.records = {CheckpointRecord{"op windows owner", std::string("new")}};
  ASSERT_TRUE(WriteCheckpointRecords(*owner_store, c.records).ok());
  owner.OnCheckpoint(c, *owner_store);
  owner.Stop(/*drain=*/true);
  ASSERT_EQ(owner.stats().last_uploaded_id, 1u);

  // The zombie's next append is refused: it is fenced and says so once.
  Checkpoint(zombie, 3);
  ASSERT_TRUE(WaitFor([&] { return zombie.fenced(); }));
  zombie.Stop(false);
  EXPECT_EQ(fenced.load(), 1);
  EXPECT_EQ(zombie.stats().last_uploaded_id, 2u);

  // The changelog holds the new owner's state, nothing of the zombie's checkpoint 3.
  std::unique_ptr<StateStore> after;
  Result<ChangelogRestore> again = Restore("after", &after);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(Table(*after), Table(*owner_store));
  EXPECT_EQ(Table(*after).count("op windows owner"), 1u);
}

TEST(LeaseTableTest, OfTwoClaimersExactlyOneWins) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  Client a(server.url()), b(server.url());
  ASSERT_TRUE(a.ok && b.ok);
  Result<std::unique_ptr<LeaseTable>> ta = LeaseTable::Open(a.js, "LEASES", 1);
  ASSERT_TRUE(ta.ok()) << ta.status().ToString();
  Result<std::unique_ptr<LeaseTable>> tb = LeaseTable::Open(b.js, "LEASES", 1);
  ASSERT_TRUE(tb.ok()) << tb.status().ToString();

  // Both see the slot absent and create it: one wins.
  Result<uint64_t> ca = (*ta)->Write("a", "node-a", 3000, 0);
  Result<uint64_t> cb = (*tb)->Write("a", "node-b", 3000, 0);
  ASSERT_NE(ca.ok(), cb.ok()) << ca.status().ToString() << " / " << cb.status().ToString();
  EXPECT_EQ((ca.ok() ? cb : ca).status().code(), Status::Code::kFailedPrecondition);
  Result<Lease> seen = (*tb)->Get("a");
  ASSERT_TRUE(seen.ok());
  EXPECT_EQ(seen->owner, "node-a");

  // Both claim the (expired) lease from the revision they read: one wins.
  Result<uint64_t> ua = (*ta)->Write("a", "node-a2", 3000, seen->revision);
  Result<uint64_t> ub = (*tb)->Write("a", "node-b", 3000, seen->revision);
  ASSERT_NE(ua.ok(), ub.ok());
  EXPECT_EQ((ua.ok() ? ub : ua).status().code(), Status::Code::kFailedPrecondition);
  // The loser's renewal from its old revision fails too: it is fenced.
  EXPECT_FALSE((*tb)->Write("a", "node-b", 3000, seen->revision).ok());
  Result<Lease> now = (*ta)->Get("a");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->owner, "node-a2");
  EXPECT_EQ(now->revision, *ua);
}

TEST(LeaseClockTest, ALeaseExpiresOnlyAfterItsRevisionStayedForTheTtl) {
  LeaseClock clock;
  Lease held{"node-a", 3000, 7};
  EXPECT_FALSE(clock.Expired("a", held, 1000, 3000, false));  // first seen
  EXPECT_FALSE(clock.Expired("a", held, 3999, 3000, false));
  held.revision = 8;  // renewed
  EXPECT_FALSE(clock.Expired("a", held, 4500, 3000, false));
  EXPECT_FALSE(clock.Expired("a", held, 7400, 3000, false));
  EXPECT_TRUE(clock.Expired("a", held, 7501, 3000, false));
  // A longer ttl in the lease wins over the watcher's.
  Lease slow{"node-b", 10'000, 3};
  EXPECT_FALSE(clock.Expired("b", slow, 0, 3000, false));
  EXPECT_FALSE(clock.Expired("b", slow, 9000, 3000, false));
  EXPECT_TRUE(clock.Expired("b", slow, 10'001, 3000, false));
  // Released: at once; absent: at once only when preferred.
  EXPECT_TRUE(clock.Expired("c", Lease{"", 3000, 4}, 0, 3000, false));
  EXPECT_TRUE(clock.Expired("d", Lease{}, 0, 3000, true));
  EXPECT_FALSE(clock.Expired("e", Lease{}, 0, 3000, false));
  EXPECT_TRUE(clock.Expired("e", Lease{}, 3001, 3000, false));
}

}  // namespace
}  // namespace inferscope
