// The /v1/workflows endpoints over a real query server, a real RocksDB store and the registry:
// success and every error case (400 naming the field or parameter, 404, 409, 503), filters,
// pagination, and persistence across a registry reload.

#include <gtest/gtest.h>
#include <httplib.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "query/server.h"
#include "state/state_store.h"
#include "state/workflow_store.h"
#include "tests/test_util.h"
#include "workflows/workflow.h"

namespace inferscope {
namespace {

using nlohmann::json;

json CreateBody(const std::string& instance = "vllm-0") {
  return {{"instance", instance},
          {"model", "llama"},
          {"engine", "vllm"},
          {"change", {{"--max-num-seqs", "512"}}},
          {"description", "more slots"},
          {"target", {{"metric", "ttft_ms"}, {"quantile", 0.5}, {"direction", "decrease"}}},
          {"guards", json::array({{{"metric", "e2e_ms"}, {"quantile", 0.95}}})},
          {"baseline", "10m"},
          {"canary", "15m"},
          {"created_by", "alice"}};
}

class WorkflowsApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str() + "/state";
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    workflow_store_ = std::make_unique<StateWorkflowStore>(store_.get());
    workflows_ = std::make_unique<WorkflowRegistry>(workflow_store_.get(), &clock_);
    ASSERT_TRUE(workflows_->Load().ok());
    Serve(workflows_.get());
  }

  void Serve(WorkflowRegistry* registry) {
    server_ = std::make_unique<QueryServer>(
        QueryServer::Options{}, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    server_->SetWorkflows(registry);
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  json Call(const std::string& method, const std::string& path, const std::string& body,
            int expected_status) {
    httplib::Result res = method == "GET" ? client_->Get(path.c_str())
                                          : client_->Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res) << method << " " << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << method << " " << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }
  json Get(const std::string& path, int expected = 200) { return Call("GET", path, "", expected); }
  json Post(const std::string& path, const json& body, int expected) {
    return Call("POST", path, body.is_null() ? "" : body.dump(), expected);
  }
  std::string Create(const std::string& instance = "vllm-0") {
    json w = Post("/v1/workflows", CreateBody(instance), 201);
    return w.value("id", "");
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<StateWorkflowStore> workflow_store_;
  std::unique_ptr<WorkflowRegistry> workflows_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(WorkflowsApiTest, CreateGetApproveApplyAndReload) {
  json created = Post("/v1/workflows", CreateBody(), 201);
  const std::string id = created["id"];
  EXPECT_EQ(id.size(), 16u);
  EXPECT_EQ(created["state"], "PENDING_APPROVAL");
  EXPECT_EQ(created["stage"], "approval");
  EXPECT_EQ(created["change"]["--max-num-seqs"], "512");
  EXPECT_EQ(created["canary_ms"], 900'000);
  EXPECT_EQ(created["created_at"], clock_.NowMs());
  EXPECT_TRUE(created["applied_at"].is_null());

  json got = Get("/v1/workflows/" + id);
  EXPECT_EQ(got, created);

  clock_.Advance(1'000);
  json approved = Post("/v1/workflows/" + id + "/approve", {{"by", "bob"}}, 200);
  EXPECT_EQ(approved["state"], "APPROVED");
  EXPECT_EQ(approved["stage"], "baseline");
  EXPECT_EQ(approved["history"][1]["by"], "api:bob");
  EXPECT_EQ(approved["history"][1]["at"], clock_.NowMs());

  json applied = Post("/v1/workflows/" + id + "/applied",
                      {{"applied_at", "2025-06-15T15:20:00Z"}, {"by", "deployer"}}, 200);
  EXPECT_EQ(applied["state"], "APPLIED");
  EXPECT_EQ(applied["stage"], "canary");
  EXPECT_EQ(applied["applied_at"], 1'750'000'800'000);

  // The workflow survives a restart: a new registry over the same store finds it as it was.
  WorkflowRegistry reloaded(workflow_store_.get(), &clock_);
  ASSERT_TRUE(reloaded.Load().ok());
  ASSERT_TRUE(reloaded.Get(id).has_value());
  EXPECT_EQ(WorkflowToJson(*reloaded.Get(id)), applied);
}

TEST_F(WorkflowsApiTest, ApplyDefaultsToNowAndRejectKeepsTheReason) {
  const std::string a = Create();
  Post("/v1/workflows/" + a + "/approve", nullptr, 200);  // an empty body is fine
  json applied = Post("/v1/workflows/" + a + "/applied", nullptr, 200);
  EXPECT_EQ(applied["applied_at"], clock_.NowMs());
  const std::string b = Create();
  json rejected = Post("/v1/workflows/" + b + "/reject", {{"reason", "not now"}}, 200);
  EXPECT_EQ(rejected["state"], "REJECTED");
  EXPECT_EQ(rejected["reason"], "not now");
}

TEST_F(WorkflowsApiTest, IllegalTransitionsAre409) {
  const std::string id = Create();
  json e = Post("/v1/workflows/" + id + "/applied", nullptr, 409);
  EXPECT_EQ(e["error"]["code"], "CONFLICT");
  EXPECT_NE(e["error"]["message"].get<std::string>().find("PENDING_APPROVAL"), std::string::npos);
  Post("/v1/workflows/" + id + "/approve", nullptr, 200);
  Post("/v1/workflows/" + id + "/approve", nullptr, 409);
  Post("/v1/workflows/" + id + "/applied", nullptr, 200);
  Post("/v1/workflows/" + id + "/reject", nullptr, 409);
  Post("/v1/workflows/" + id + "/approve", nullptr, 409);
  const std::string r = Create();
  Post("/v1/workflows/" + r + "/reject", nullptr, 200);
  Post("/v1/workflows/" + r + "/approve", nullptr, 409);
  Post("/v1/workflows/" + r + "/reject", nullptr, 409);
  EXPECT_EQ(Get("/v1/workflows/" + r)["state"], "REJECTED")
      << "a refused transition changes nothing";
}

TEST_F(WorkflowsApiTest, UnknownIdsAre404) {
  for (const char* action : {"approve", "reject", "applied"}) {
    json e = Post(std::string("/v1/workflows/00000000deadbeef/") + action, nullptr, 404);
    EXPECT_EQ(e["error"]["code"], "NOT_FOUND");
  }
  json e = Get("/v1/workflows/00000000deadbeef", 404);
  EXPECT_EQ(e["error"]["code"], "NOT_FOUND");
}

TEST_F(WorkflowsApiTest, BadBodiesAre400NamingTheField) {
  auto field_of = [&](const json& body) {
    json e = Call("POST", "/v1/workflows", body.is_string() ? body.get<std::string>() : body.dump(),
                  400);
    EXPECT_EQ(e["error"]["code"], "VALIDATION_ERROR");
    return e["error"]["details"].value("field", "");
  };
  EXPECT_EQ(field_of(json("{not json")), "");
  json b = CreateBody();
  b.erase("instance");
  EXPECT_EQ(field_of(b), "instance");
  b = CreateBody();
  b["model"] = "";
  EXPECT_EQ(field_of(b), "model");
  b = CreateBody();
  b["guards"][0]["quantile"] = 2;
  EXPECT_EQ(field_of(b), "guards[0].quantile");
  b = CreateBody();
  b["canary"] = "forever";
  EXPECT_EQ(field_of(b), "canary");
  b = CreateBody();
  b["priority"] = 1;
  EXPECT_EQ(field_of(b), "priority");
  EXPECT_EQ(workflows_->size(), 0u) << "nothing was created";

  const std::string id = Create();
  json e = Post("/v1/workflows/" + id + "/approve", {{"by", 3}}, 400);
  EXPECT_EQ(e["error"]["details"]["field"], "by");
  e = Post("/v1/workflows/" + id + "/reject", {{"why", "x"}}, 400);
  EXPECT_EQ(e["error"]["details"]["field"], "why");
  e = Call("POST", "/v1/workflows/" + id + "/approve", "[1]", 400);
  EXPECT_EQ(e["error"]["code"], "VALIDATION_ERROR");
  Post("/v1/workflows/" + id + "/approve", nullptr, 200);
  e = Post("/v1/workflows/" + id + "/applied", {{"applied_at", "yesterday"}}, 400);
  EXPECT_EQ(e["error"]["details"]["field"], "applied_at");
  EXPECT_EQ(Get("/v1/workflows/" + id)["state"], "APPROVED");
}

TEST_F(WorkflowsApiTest, ListFiltersPagesAndRefusesUnknownParameters) {
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.insert(Create(i < 3 ? "vllm-0" : "vllm-1"));
  const std::string approved = *ids.begin();
  Post("/v1/workflows/" + approved + "/approve", nullptr, 200);

  json all = Get("/v1/workflows");
  ASSERT_EQ(all["workflows"].size(), 5u);
  EXPECT_TRUE(all["next_cursor"].is_null());
  EXPECT_EQ(Get("/v1/workflows?instance_id=vllm-1")["workflows"].size(), 2u);
  json by_state = Get("/v1/workflows?status=APPROVED");
  ASSERT_EQ(by_state["workflows"].size(), 1u);
  EXPECT_EQ(by_state["workflows"][0]["id"], approved);
  EXPECT_EQ(Get("/v1/workflows?status=pending_approval")["workflows"].size(), 4u)
      << "state names are case-insensitive";

  std::set<std::string> walked;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    json p = Get("/v1/workflows?limit=2" + (cursor.empty() ? "" : "&cursor=" + cursor));
    EXPECT_LE(p["workflows"].size(), 2u);
    for (const json& w : p["workflows"]) EXPECT_TRUE(walked.insert(w["id"]).second);
    if (p["next_cursor"].is_null()) break;
    cursor = p["next_cursor"];
  }
  EXPECT_EQ(walked, ids);

  json e = Get("/v1/workflows?status=DONE", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "status");
  e = Get("/v1/workflows?instance=vllm-0", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "instance");
  e = Get("/v1/workflows?limit=0", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "limit");
  e = Get("/v1/workflows/" + approved + "?verbose=1", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "verbose");
  e = Call("POST", "/v1/workflows?dry_run=1", CreateBody().dump(), 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "dry_run");
}

TEST_F(WorkflowsApiTest, AFullRegistryIs503) {
  WorkflowRegistry full(nullptr, &clock_);
  Workflow w = *WorkflowFromRequest(CreateBody());
  for (size_t i = 0; i < WorkflowRegistry::kMaxWorkflows; ++i) ASSERT_TRUE(full.Create(w).ok());
  server_.reset();
  Serve(&full);
  json e = Post("/v1/workflows", CreateBody(), 503);
  EXPECT_EQ(e["error"]["code"], "UNAVAILABLE");
  server_.reset();
}

TEST_F(WorkflowsApiTest, NoRegistryIs500) {
  server_.reset();
  Serve(nullptr);
  Get("/v1/workflows", 500);
  Post("/v1/workflows", CreateBody(), 500);
}

}  // namespace
}  // namespace inferscope
