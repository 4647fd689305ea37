#include "state/rocksdb_state_sink.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "pipeline/registry.h"
#include "state/register.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

ConfigNode Options(const std::string& yaml) {
  return ConfigNode("<test>", yaml.empty() ? YAML::Node(YAML::NodeType::Map) : YAML::Load(yaml),
                    "sinks[0].options");
}

class RocksDbStateSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    Result<std::unique_ptr<StateStore>> opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    ctx_.name = "state";
    ctx_.interner = &interner_;
    ctx_.metrics = &metrics_;
    ctx_.clock = &clock_;
    ctx_.state = store_.get();
  }

  WindowSummary Summary(std::string_view instance, int64_t start_ms, double value) {
    WindowSummary s;
    s.series = {interner_.Intern(instance), interner_.Intern("llama"), interner_.Intern("ttft_ms")};
    s.start_ms = start_ms;
    s.end_ms = start_ms + 10'000;
    s.max_event_time_ms = start_ms + 5;
    s.agg.Add(value, start_ms + 5);
    s.agg.AddEvent(false);
    return s;
  }

  size_t CountPanes(std::string_view instance) {
    size_t n = 0;
    EXPECT_TRUE(store_
                    ->ScanPanes(instance, "llama", "ttft_ms", 0, INT64_MAX,
                                [&n](const StoredPane&) {
                                  ++n;
                                  return Status::Ok();
                                })
                    .ok());
    return n;
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  ManualClock clock_{1'000'000};
  std::unique_ptr<StateStore> store_;
  StageContext ctx_;
};

TEST_F(RocksDbStateSinkTest, CreateValidatesOptions) {
  EXPECT_TRUE(RocksDbStateSink::Create(Options("")).ok());
  EXPECT_TRUE(RocksDbStateSink::Create(Options("max_batch_panes: 5")).ok());
  Result<std::unique_ptr<RocksDbStateSink>> typo =
      RocksDbStateSink::Create(Options("max_batch: 5"));
  EXPECT_EQ(typo.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(typo.status().message().find("max_batch"), std::string::npos);
  EXPECT_EQ(RocksDbStateSink::Create(Options("max_batch_panes: 0")).status().code(),
            Status::Code::kInvalidArgument);
}

TEST_F(RocksDbStateSinkTest, OpenFailsWithoutAStateStore) {
  auto sink = RocksDbStateSink::Create(Options(""));
  ASSERT_TRUE(sink.ok());
  ctx_.state = nullptr;
  Status s = (*sink)->Open(ctx_);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("state"), std::string::npos);
}

TEST_F(RocksDbStateSinkTest, WritesEveryPaneOfALargeBatchInChunks) {
  auto sink = RocksDbStateSink::Create(Options("max_batch_panes: 2"));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx_).ok());
  OutputBatch batch;
  for (int i = 0; i < 5; ++i) batch.Add<kind::PaneSummary>(Summary("node-1", i * 10'000, i));
  batch.watermark_ms = 50'000;
  ASSERT_TRUE((*sink)->Write(batch).ok());

  EXPECT_EQ(CountPanes("node-1"), 5u);
  EXPECT_EQ(store_->Watermark(), 50'000);
  EXPECT_EQ(metrics_.CounterValue("inferscope_sink_panes_written_total", {{"stage", "state"}}), 5u);
  EXPECT_EQ(metrics_.CounterValue("inferscope_state_panes_written_total"), 5u);
  // Three WriteBatches of at most two panes.
  std::string text = metrics_.RenderPrometheus();
  EXPECT_NE(text.find("inferscope_state_write_seconds_count 3"), std::string::npos) << text;
}

TEST_F(RocksDbStateSinkTest, AnEmptyBatchStillAdvancesTheWatermark) {
  auto sink = RocksDbStateSink::Create(Options(""));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx_).ok());
  OutputBatch batch;
  batch.watermark_ms = 70'000;
  ASSERT_TRUE((*sink)->Write(batch).ok());
  EXPECT_EQ(store_->Watermark(), 70'000);
}

TEST_F(RocksDbStateSinkTest, FailedWritesAreCountedAndReported) {
  auto sink = RocksDbStateSink::Create(Options(""));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx_).ok());
  OutputBatch batch;
  batch.Add<kind::PaneSummary>(Summary(std::string(300, 'n'), 0, 1));
  batch.watermark_ms = 10'000;
  Status s = (*sink)->Write(batch);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(metrics_.CounterValue("inferscope_sink_write_errors_total", {{"stage", "state"}}), 1u);
  EXPECT_EQ(store_->Watermark(), 0);
}

// The decoder rejects names that are not UTF-8, but the sink must not depend on it: a dead letter
// is serialised with U+FFFD in place of bad bytes instead of throwing (which killed the engine).
TEST_F(RocksDbStateSinkTest, DeadLetterWithANameThatIsNotUtf8IsStored) {
  auto sink = RocksDbStateSink::Create(Options(""));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx_).ok());
  OutputBatch batch;
  DeadLetter& d = batch.Emplace<kind::DeadLetter>();
  d.event.kind = EventKind::kRequest;
  d.event.publisher = interner_.Intern("pub-\xc0\xaf");
  d.event.instance = interner_.Intern("vllm-\xff");
  d.event.model = interner_.Intern("llama");
  d.event.time_ms = 5;
  d.event.e2e_ms = 1;
  d.event.present = kHasE2e;
  d.reason = "too_late";
  batch.watermark_ms = 10'000;
  ASSERT_TRUE((*sink)->Write(batch).ok());
  EXPECT_EQ(
      metrics_.CounterValue("inferscope_sink_dead_letters_written_total", {{"stage", "state"}}),
      1u);
  std::vector<std::string> values;
  ASSERT_TRUE(store_
                  ->ScanRecords(kDeadLetterTable, "", "",
                                [&](std::string_view, std::string_view value) {
                                  values.emplace_back(value);
                                  return true;
                                })
                  .ok());
  ASSERT_EQ(values.size(), 1u);
  EXPECT_NE(values[0].find("\"i\":\"vllm-\xef\xbf\xbd\""), std::string::npos) << values[0];
}

TEST_F(RocksDbStateSinkTest, IsRegisteredByName) {
  Registry registry;
  RegisterStateSinks(registry);
  EXPECT_TRUE(registry.HasSink("rocksdb_state"));
  EXPECT_TRUE(registry.HasSink("rocksdb_alerts"));
  EXPECT_FALSE(registry.HasSink("zmq_pub")) << "the stream sinks register in sinks/";
  auto sink = registry.CreateSink("rocksdb_state", Options("max_batch_panes: 3"));
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  ASSERT_TRUE((*sink)->Open(ctx_).ok());
  OutputBatch batch;
  batch.Add<kind::PaneSummary>(Summary("node-2", 0, 1));
  batch.watermark_ms = 10'000;
  ASSERT_TRUE((*sink)->Write(batch).ok());
  EXPECT_EQ(CountPanes("node-2"), 1u);
}

}  // namespace
}  // namespace inferscope
