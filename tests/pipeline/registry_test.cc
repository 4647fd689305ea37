#include "pipeline/registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace inferscope {
namespace {

// Minimal stages: the registry only creates them.
struct NullSource final : Source {
  static constexpr std::string_view kName = "null_source";
  static constexpr std::string_view kDescription = "emits nothing";
  static Result<std::unique_ptr<NullSource>> Create(const ConfigNode&) {
    return std::make_unique<NullSource>();
  }
  Status Open(const StageContext&) override { return Status::Ok(); }
  Status Run(SourceOutput&, const std::atomic<bool>&) override { return Status::Ok(); }
};

// Reads one option, so that a factory error (file, line, field) can be seen to pass through.
struct CountingOperator final : Operator {
  static constexpr std::string_view kName = "counting";
  static constexpr std::string_view kDescription = "counts events";
  static Result<std::unique_ptr<CountingOperator>> Create(const ConfigNode& options) {
    Result<int64_t> limit = options.GetInt("limit", 10, 1);
    if (!limit.ok()) return limit.status();
    auto op = std::make_unique<CountingOperator>();
    op->limit = *limit;
    return op;
  }
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Emits() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Process(const EventBatch&, OutputBatch&) override { return Status::Ok(); }
  int64_t limit = 0;
};

struct NullSink final : Sink {
  static constexpr std::string_view kName = "null_sink";
  static constexpr std::string_view kDescription = "drops everything";
  static Result<std::unique_ptr<NullSink>> Create(const ConfigNode&) {
    return std::make_unique<NullSink>();
  }
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Write(const OutputBatch&) override { return Status::Ok(); }
};

Registry MakeRegistry() {
  Registry r;
  r.AddSink<NullSink>();
  r.AddOperator<CountingOperator>();
  r.AddSource<NullSource>();
  r.AddSink("another_sink", "also drops everything",
            [](const ConfigNode&) -> Result<std::unique_ptr<Sink>> {
              return std::unique_ptr<Sink>(std::make_unique<NullSink>());
            });
  return r;
}

TEST(RegistryTest, CreatesRegisteredTypesByName) {
  Registry r = MakeRegistry();
  EXPECT_TRUE(r.HasSource("null_source"));
  EXPECT_TRUE(r.HasOperator("counting"));
  EXPECT_TRUE(r.HasSink("null_sink"));
  EXPECT_FALSE(r.HasSink("counting")) << "kinds are separate name spaces";
  EXPECT_TRUE(r.CreateSource("null_source", ConfigNode()).ok());
  EXPECT_TRUE(r.CreateSink("another_sink", ConfigNode()).ok());
  ConfigNode options("t.yaml", YAML::Load("limit: 3"), "operators[0].options");
  Result<std::unique_ptr<Operator>> op = r.CreateOperator("counting", options);
  ASSERT_TRUE(op.ok()) << op.status().ToString();
  EXPECT_EQ(static_cast<CountingOperator&>(**op).limit, 3);
}

TEST(RegistryTest, UnknownTypesAreNotFoundAndFactoryErrorsPassThrough) {
  Registry r = MakeRegistry();
  Status s = r.CreateOperator("nope", ConfigNode()).status();
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_EQ(s.message(), "unknown operator type 'nope'");
  EXPECT_EQ(r.CreateSource("null_sink", ConfigNode()).status().code(), Status::Code::kNotFound);
  ConfigNode bad("t.yaml", YAML::Load("limit: 0"), "operators[0].options");
  s = r.CreateOperator("counting", bad).status();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("t.yaml:1:8: operators[0].options.limit"), std::string::npos)
      << s.ToString();
}

TEST(RegistryTest, ListsItselfSourcesFirstEachKindByName) {
  Registry r = MakeRegistry();
  std::vector<std::string> listed;
  for (const Registry::Entry& e : r.List()) listed.push_back(e.kind + ":" + e.name);
  EXPECT_EQ(listed, (std::vector<std::string>{"source:null_source", "operator:counting",
                                              "sink:another_sink", "sink:null_sink"}));
  EXPECT_EQ(r.List()[1].description, "counts events");
  EXPECT_EQ(r.Names("sink"), "another_sink, null_sink");
  EXPECT_EQ(r.Names("source"), "null_source");
}

TEST(RegistryTest, RegisteringANameAgainReplacesIt) {
  Registry r;
  r.AddSink<NullSink>();
  r.AddSink(std::string(NullSink::kName), "replaced",
            [](const ConfigNode&) -> Result<std::unique_ptr<Sink>> {
              return Status::Unavailable("replaced factory");
            });
  ASSERT_EQ(r.List().size(), 1u);
  EXPECT_EQ(r.List()[0].description, "replaced");
  EXPECT_EQ(r.CreateSink("null_sink", ConfigNode()).status().code(), Status::Code::kUnavailable);
}

}  // namespace
}  // namespace inferscope
