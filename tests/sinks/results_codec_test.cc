#include "sinks/results_codec.h"

#include <gtest/gtest.h>

#include <string>

#include "pipeline/interner.h"

namespace inferscope {
namespace {

WindowSummary Pane(Interner& names, std::vector<double> values, bool update = false) {
  WindowSummary pane;
  pane.series = {names.Intern("vllm-0"), names.Intern("llama"), names.Intern("e2e_ms")};
  pane.start_ms = 10'000;
  pane.end_ms = 20'000;
  pane.max_event_time_ms = 19'000;
  pane.update = update;
  for (double v : values) {
    pane.agg.Add(v, 12'000);
    pane.agg.AddEvent(false);
  }
  return pane;
}

TEST(ResultsCodecTest, APaneRoundTripsWithItsSketch) {
  Interner names;
  const WindowSummary pane = Pane(names, {10, 20, 300});
  ResultsMessage m;
  ASSERT_TRUE(EncodePaneResult(pane, names, &m).ok());
  EXPECT_EQ(m.kind, ResultsKind::kPane);
  PaneResult got;
  ASSERT_TRUE(DecodePaneResult(m.payload, &got).ok());
  EXPECT_EQ(got.instance, "vllm-0");
  EXPECT_EQ(got.model, "llama");
  EXPECT_EQ(got.metric, "e2e_ms");
  EXPECT_EQ(got.start_ms, 10'000);
  EXPECT_EQ(got.end_ms, 20'000);
  EXPECT_EQ(got.max_event_time_ms, 19'000);
  EXPECT_FALSE(got.update);
  std::string want, have;
  pane.agg.EncodeTo(&want);
  got.agg.EncodeTo(&have);
  EXPECT_EQ(have, want);  // the same bytes the engine's store writes
  EXPECT_DOUBLE_EQ(got.agg.Quantile(0.5), pane.agg.Quantile(0.5));
}

TEST(ResultsCodecTest, MsgIdsFollowIdentityAndVersion) {
  Interner names;
  ResultsMessage a, again, fired_again, later;
  ASSERT_TRUE(EncodePaneResult(Pane(names, {10, 20}), names, &a).ok());
  ASSERT_TRUE(EncodePaneResult(Pane(names, {10, 20}), names, &again).ok());
  // A restart re-fires a pane without `update`: the same result, the same id.
  ASSERT_TRUE(EncodePaneResult(Pane(names, {10, 20}, /*update=*/true), names, &fired_again).ok());
  ASSERT_TRUE(EncodePaneResult(Pane(names, {10, 20, 30}), names, &later).ok());
  EXPECT_EQ(a.msg_id, again.msg_id);
  EXPECT_EQ(a.msg_id, fired_again.msg_id);
  EXPECT_NE(a.msg_id, later.msg_id);
  EXPECT_EQ(a.msg_id.rfind("pane:", 0), 0u);

  Alert alert;
  alert.fingerprint = 0xabc;
  alert.state = AlertState::kFiring;
  alert.severity = Severity::kWarning;
  alert.detected_at_ms = 123;
  alert.window_end_ms = 60'000;
  ResultsMessage firing, resolved;
  EncodeAlertResult(alert, &firing);
  EXPECT_EQ(firing.msg_id, "alert:0000000000000abc:firing:warning:60000");
  // Detected again by another node (a takeover replaying from the slot's checkpoint): the same
  // transition, the same id, so the stream's duplicate window drops it (no re-fire).
  Alert replayed = alert;
  replayed.detected_at_ms = 9'999;
  ResultsMessage redetected;
  EncodeAlertResult(replayed, &redetected);
  EXPECT_EQ(redetected.msg_id, firing.msg_id);
  // An early firing and its confirmation by the closed pane are two results.
  replayed.early = true;
  EncodeAlertResult(replayed, &redetected);
  EXPECT_EQ(redetected.msg_id, firing.msg_id + ":early");
  alert.state = AlertState::kResolved;
  EncodeAlertResult(alert, &resolved);
  EXPECT_NE(firing.msg_id, resolved.msg_id);
  Result<Alert> back = DecodeAlertResult(resolved.payload);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->fingerprint, 0xabcu);
  EXPECT_EQ(back->state, AlertState::kResolved);
}

TEST(ResultsCodecTest, WatermarksAndSubjects) {
  ResultsMessage m;
  EncodeWatermarkResult("node-a", 5000, &m);
  WatermarkResult w;
  ASSERT_TRUE(DecodeWatermarkResult(m.payload, &w).ok());
  EXPECT_EQ(w.node, "node-a");
  EXPECT_EQ(w.watermark_ms, 5000);
  Result<ResultsKind> kind =
      ResultsKindOfSubject("inferscope.results.watermark", "inferscope.results");
  ASSERT_TRUE(kind.ok());
  EXPECT_EQ(*kind, ResultsKind::kWatermark);
  EXPECT_FALSE(ResultsKindOfSubject("inferscope.results.nope", "inferscope.results").ok());
  EXPECT_FALSE(ResultsKindOfSubject("other.pane", "inferscope.results").ok());
}

TEST(ResultsCodecTest, RefusesAnotherFormatAndTruncatedPayloads) {
  Interner names;
  ResultsMessage m;
  ASSERT_TRUE(EncodePaneResult(Pane(names, {1}), names, &m).ok());
  PaneResult got;
  std::string other = m.payload;
  other[0] = 2;
  EXPECT_EQ(DecodePaneResult(other, &got).code(), Status::Code::kCorruption);
  for (size_t n = 0; n < 40 && n < m.payload.size(); ++n) {
    EXPECT_FALSE(DecodePaneResult(m.payload.substr(0, n), &got).ok()) << n;
  }
  EXPECT_FALSE(DecodeAlertResult(std::string(1, '\1') + "{not json").ok());
}

}  // namespace
}  // namespace inferscope
