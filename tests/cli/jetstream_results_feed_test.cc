// The query node's results feed (cli/results_feed.h) against a real nats-server: a delivery lost
// on the way is fetched again, not skipped.

#include <gtest/gtest.h>
#include <nats/nats.h>

#include <memory>
#include <string>
#include <string_view>

#include "cli/results_feed.h"
#include "clients/cpp/jetstream_publisher.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sinks/results_codec.h"
#include "state/state_store.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::NatsServer;
using testing::TempDir;
using testing::WaitFor;

constexpr int64_t kPaneMs = 1'000;

// Publishes one pane result (one event) of node-0's e2e_ms starting at `start_ms` to res.pane.
void PublishPane(natsConnection* conn, Interner& names, int64_t start_ms) {
  WindowSummary pane;
  pane.series = {names.Intern("node-0"), names.Intern("llama"), names.Intern("e2e_ms")};
  pane.start_ms = start_ms;
  pane.end_ms = start_ms + kPaneMs;
  pane.max_event_time_ms = start_ms + 1;
  pane.agg.Add(100, start_ms + 1);
  pane.agg.AddEvent(false);
  ResultsMessage m;
  ASSERT_TRUE(EncodePaneResult(pane, names, &m).ok());
  natsMsg* reply = nullptr;
  ASSERT_EQ(natsConnection_Request(&reply, conn, "res.pane", m.payload.data(),
                                   static_cast<int>(m.payload.size()), 5000),
            NATS_OK);  // the stream's acknowledgement: stored
  natsMsg_Destroy(reply);
}

uint64_t StoredPanes(StateStore& store, int64_t from_ms, int64_t to_ms) {
  uint64_t panes = 0;
  EXPECT_TRUE(store
                  .ScanPanes("node-0", "llama", "e2e_ms", from_ms, to_ms,
                             [&](const StoredPane&) {
                               ++panes;
                               return Status::Ok();
                             })
                  .ok());
  return panes;
}

// As a server that dies with deliveries in flight would: a waiting pull request of the test's own,
// queued behind the feed's, takes one delivery of the feed's consumer. The next delivery the feed
// gets skips a consumer sequence; it creates its consumer again after its position and applies the
// lost pane. Before, it applied the next ones and acknowledged (AckAll) the lost one with them.
TEST(JetStreamResultsFeedTest, ADeliveryLostOnTheWayIsFetchedAgainNotSkipped) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  std::string error;
  ASSERT_TRUE(client::JetStreamPublisher::EnsureStream(server.url(), "RES", "res", &error))
      << error;  // subjects res.*, as a jetstream_results sink would make it
  natsConnection* conn = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&conn, server.url().c_str()), NATS_OK);
  MetricsRegistry metrics;
  StateStoreOptions store_options;
  store_options.path = dir.str() + "/state";
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(store_options, &metrics);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ResultsFeedOptions options;
  options.url = server.url();
  options.stream = "RES";
  options.subject_prefix = "res";
  options.durable = "query";
  options.fetch_wait_ms = 200;
  SystemClock clock;
  Result<std::unique_ptr<ResultsFeed>> feed =
      ResultsFeed::Start(options, store->get(), &metrics, &clock);
  ASSERT_TRUE(feed.ok()) << feed.status().ToString();

  Interner names;
  const int64_t t0 = 1'700'000'000'000;
  int published = 0;
  for (; published < 3; ++published) {
    ASSERT_NO_FATAL_FAILURE(PublishPane(conn, names, t0 + published * kPaneMs));
  }
  ASSERT_TRUE(WaitFor([&] { return (*feed)->Health().value("applied", 0) == 3; }))
      << (*feed)->Health().dump();

  natsSubscription* inbox = nullptr;
  ASSERT_EQ(natsConnection_SubscribeSync(&inbox, conn, "test.stolen"), NATS_OK);
  const std::string pull = R"({"batch":1,"expires":5000000000})";
  ASSERT_EQ(
      natsConnection_PublishRequest(conn, "$JS.API.CONSUMER.MSG.NEXT.RES.query", "test.stolen",
                                    pull.data(), static_cast<int>(pull.size())),
      NATS_OK);
  // Panes until one reaches the test's request (first in the server's queue once the feed's
  // pending request ended).
  bool stolen = false;
  for (int i = 0; i < 40 && !stolen; ++i, ++published) {
    ASSERT_NO_FATAL_FAILURE(PublishPane(conn, names, t0 + published * kPaneMs));
    natsMsg* msg = nullptr;
    if (natsSubscription_NextMsg(&msg, inbox, 50) != NATS_OK) continue;
    const char* reply = natsMsg_GetReply(msg);
    stolen = reply != nullptr && std::string_view(reply).starts_with("$JS.ACK.");
    natsMsg_Destroy(msg);
  }
  natsSubscription_Destroy(inbox);
  ASSERT_TRUE(stolen) << "the feed fetched every pane before the test's pull request";
  for (int i = 0; i < 3; ++i, ++published) {
    ASSERT_NO_FATAL_FAILURE(PublishPane(conn, names, t0 + published * kPaneMs));
  }

  EXPECT_TRUE(WaitFor([&] {
    return StoredPanes(**store, t0, t0 + published * kPaneMs) == static_cast<uint64_t>(published);
  })) << StoredPanes(**store, t0, t0 + published * kPaneMs)
      << " panes stored of " << published << ": " << (*feed)->Health().dump();
  EXPECT_GE(
      metrics.GetCounter("inferscope_results_feed_delivery_gaps_total", "", {{"stream", "RES"}})
          ->value(),
      1u);
  (*feed)->Stop();
  natsConnection_Destroy(conn);
}

}  // namespace
}  // namespace inferscope
