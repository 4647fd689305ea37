#include "pipeline/topology.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/test_util.h"

namespace inferscope {
namespace {

// Minimal stage types so the loader can be tested apart from the real stages (those are covered by
// the integration tests, which validate the shipped topologies).
struct NullSource final : Source {
  static constexpr std::string_view kName = "null_source";
  static constexpr std::string_view kDescription = "emits nothing";
  static Result<std::unique_ptr<NullSource>> Create(const ConfigNode& options) {
    INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({"endpoint"}));
    return std::make_unique<NullSource>();
  }
  Status Open(const StageContext&) override { return Status::Ok(); }
  Status Run(SourceOutput&, const std::atomic<bool>&) override { return Status::Ok(); }
};
struct NullOperator final : Operator {
  static constexpr std::string_view kName = "null_operator";
  static constexpr std::string_view kDescription = "emits nothing";
  static Result<std::unique_ptr<NullOperator>> Create(const ConfigNode& options) {
    Result<int64_t> pane = options.GetDurationMs("pane", 10'000, 100);
    if (!pane.ok()) return pane.status();
    return std::make_unique<NullOperator>();
  }
  Status Open(const StageContext&) override { return Status::Ok(); }
  // Reads events and pane summaries, so that it can be chained behind itself.
  KindSet Reads() const override { return KindSet::Of<kind::Event, kind::PaneSummary>(); }
  KindSet Emits() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Process(const EventBatch&, OutputBatch&) override { return Status::Ok(); }
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

Registry TestRegistry() {
  Registry r;
  r.AddSource<NullSource>();
  r.AddOperator<NullOperator>();
  r.AddSink<NullSink>();
  return r;
}

constexpr char kGood[] = R"(name: t
state:
  path: /tmp/x
query:
  listen: 127.0.0.1:0
sources:
  - name: in
    type: null_source
operators:
  - name: win
    type: null_operator
    inputs: [in]
    options:
      pane: 5s
sinks:
  - name: out
    type: null_sink
    inputs: [win]
)";

Status Check(const std::string& text) {
  Result<TopologySpec> spec = ParseTopology(text, "t.yaml");
  if (!spec.ok()) return spec.status();
  return ValidateTopology(*spec, TestRegistry());
}

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

TEST(TopologyTest, ParsesStagesAndSettings) {
  Result<TopologySpec> spec = ParseTopology(kGood, "t.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->name, "t");
  EXPECT_EQ(spec->state_path, "/tmp/x");
  EXPECT_EQ(spec->query_listen, "127.0.0.1:0");
  ASSERT_EQ(spec->operators.size(), 1u);
  EXPECT_EQ(spec->operators[0].inputs, std::vector<std::string>{"in"});
  EXPECT_EQ(*spec->operators[0].options.GetDurationMs("pane"), 5000);
  EXPECT_TRUE(ValidateTopology(*spec, TestRegistry()).ok());
}

TEST(TopologyTest, YamlSyntaxErrorNamesFileAndLine) {
  Status st = Check("name: t\nsources:\n  - name: [unclosed\n");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("t.yaml:"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("YAML syntax error"), std::string::npos) << st.message();
}

TEST(TopologyTest, UnknownTypeNamesFileLineAndField) {
  Status st = Check(Replace(kGood, "type: null_operator", "type: windoww"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  // The operator's type is on line 11, column 11.
  EXPECT_NE(st.message().find("t.yaml:11:11: operators[0].type: unknown operator type 'windoww'"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("known: null_operator"), std::string::npos);
}

TEST(TopologyTest, UnknownFieldIsAnError) {
  Status st = Check(Replace(kGood, "    inputs: [in]\n", "    inputs: [in]\n    input: [in]\n"));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("t.yaml:13:5: operators[0].input: unknown field"), std::string::npos)
      << st.message();
}

TEST(TopologyTest, BadOptionValueNamesFileLineAndField) {
  Result<TopologySpec> spec = ParseTopology(Replace(kGood, "pane: 5s", "pane: fast"), "t.yaml");
  ASSERT_TRUE(spec.ok());
  Result<std::unique_ptr<Operator>> op =
      TestRegistry().CreateOperator("null_operator", spec->operators[0].options);
  ASSERT_FALSE(op.ok());
  EXPECT_NE(
      op.status().message().find("t.yaml:14:13: operators[0].options.pane: expected a duration"),
      std::string::npos)
      << op.status().message();
}

TEST(TopologyTest, WiringErrors) {
  Status missing = Check(Replace(kGood, "inputs: [in]", "inputs: [nope]"));
  EXPECT_NE(missing.message().find("operators[0].inputs: no stage named 'nope'"), std::string::npos)
      << missing.message();

  Status wrong_kind = Check(Replace(kGood, "inputs: [win]", "inputs: [in]"));
  EXPECT_NE(wrong_kind.message().find("sinks[0].inputs: 'in' is not a operator"), std::string::npos)
      << wrong_kind.message();

  Status duplicate = Check(Replace(kGood, "  - name: out", "  - name: win"));
  EXPECT_NE(duplicate.message().find("sinks[0].name: duplicate stage name 'win'"),
            std::string::npos)
      << duplicate.message();

  Status no_inputs = Check(Replace(kGood, "    inputs: [win]\n", ""));
  EXPECT_NE(no_inputs.message().find("sinks[0].inputs: required field is missing"),
            std::string::npos)
      << no_inputs.message();
}

TEST(TopologyTest, OperatorsChainOnlyOnOperatorsListedBefore) {
  const std::string chained = Replace(kGood, "sinks:", R"(  - name: after
    type: null_operator
    inputs: [win]
sinks:)");
  EXPECT_TRUE(Check(chained).ok()) << Check(chained).message();

  const std::string forward = Replace(kGood, "    inputs: [in]\n", "    inputs: [in, later]\n") +
                              "  - name: later\n    type: null_sink\n    inputs: [win]\n";
  Status sink_input = Check(forward);
  EXPECT_NE(sink_input.message().find("'later' is not a source"), std::string::npos)
      << sink_input.message();

  const std::string before =
      Replace(Replace(kGood, "inputs: [in]", "inputs: [in, after]"),
              "sinks:", "  - name: after\n    type: null_operator\n    inputs: [in]\nsinks:");
  Status order = Check(before);
  EXPECT_NE(order.message().find("operators[0].inputs: operator 'after' must be listed before"),
            std::string::npos)
      << order.message();
}

TEST(TopologyTest, UnconsumedSourceIsAnError) {
  std::string text =
      Replace(kGood, "operators:", "  - name: orphan\n    type: null_source\noperators:");
  Status st = Check(text);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("source 'orphan' feeds no operator"), std::string::npos)
      << st.message();
}

TEST(TopologyTest, EngineSettingsAreChecked) {
  Status st = Check(std::string(kGood) + "engine:\n  queue_capacity: 100\n  batch_pool: 10\n");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("engine.batch_pool: must be larger than queue_capacity"),
            std::string::npos)
      << st.message();
  Status bad_int = Check(std::string(kGood) + "engine:\n  queue_capacity: lots\n");
  EXPECT_NE(bad_int.message().find("t.yaml:20:19: engine.queue_capacity: expected an integer"),
            std::string::npos)
      << bad_int.message();
}

TEST(TopologyTest, LoadsFileAndReportsMissingFile) {
  testing::TempDir dir;
  std::string path = dir.str() + "/t.yaml";
  std::ofstream(path) << kGood;
  Result<TopologySpec> spec = LoadTopologyFile(path);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->file, path);
  Result<TopologySpec> missing = LoadTopologyFile(dir.str() + "/none.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
}

// A key given twice in one mapping (yaml-cpp keeps the first silently) names the second one.
TEST(TopologyTest, DuplicateKeyNamesFileLineColumnAndKey) {
  Status in_options =
      Check(Replace(kGood, "      pane: 5s\n", "      pane: 5s\n      pane: bogus\n"));
  EXPECT_EQ(in_options.message(),
            "t.yaml:15:7: duplicate key 'pane' (given earlier in the same mapping)");
  Status top = Check(std::string(kGood) + "name: dup\n");
  EXPECT_EQ(top.message(), "t.yaml:19:1: duplicate key 'name' (given earlier in the same mapping)");
  // The same key in different mappings is fine.
  EXPECT_TRUE(Check(kGood).ok());
}

// yaml-cpp's Load reads the first document only: a second one (after `---`) was silently ignored.
TEST(TopologyTest, ASecondYamlDocumentIsRefused) {
  Status two = Check(std::string(kGood) + "---\nname: other\n");
  EXPECT_FALSE(two.ok());
  EXPECT_NE(two.message().find("t.yaml:19:1: a second YAML document"), std::string::npos)
      << two.message();
  // A document start marker before the one document is fine.
  EXPECT_TRUE(Check("---\n" + std::string(kGood)).ok())
      << Check("---\n" + std::string(kGood)).message();
}

// Aliased collections are shared nodes: the duplicate-key walk visits each once. Without that, this
// 10^8-leaf alias bomb would take minutes; it parses at once (its field is the test operator's,
// which does not read it).
TEST(TopologyTest, DuplicateKeyCheckVisitsAnAliasedNodeOnce) {
  std::string bomb = "      bomb:\n        l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n";
  for (int i = 1; i <= 8; ++i) {
    bomb += "        l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) bomb += (j ? ", *l" : "*l") + std::to_string(i - 1);
    bomb += "]\n";
  }
  Status st = Check(Replace(kGood, "      pane: 5s\n", "      pane: 5s\n" + bomb));
  EXPECT_TRUE(st.ok()) << st.ToString();
  Status dup =
      Check(Replace(kGood, "      pane: 5s\n", "      pane: 5s\n" + bomb + "        l0: x\n"));
  EXPECT_NE(dup.message().find("duplicate key 'l0'"), std::string::npos) << dup.ToString();
}

// A topology file over the 2 MiB cap is refused before it is parsed, reading at most cap + 1 bytes
// (so /dev/zero ends too); a directory and an unreadable file say so.
TEST(TopologyTest, FileOverTheSizeCapDirectoryAndMissingFileAreRefusedWithTheReason) {
  testing::TempDir dir;
  const std::string big = dir.str() + "/big.yaml";
  {
    std::ofstream f(big);
    f << kGood << "#" << std::string(kMaxTopologyFileBytes, 'x') << "\n";
  }
  const int64_t size = static_cast<int64_t>(std::filesystem::file_size(big));
  Result<TopologySpec> too_big = LoadTopologyFile(big);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().message(),
            big + ": " + std::to_string(size) +
                " bytes, topology files are at most 2097152 bytes (2 MiB)");
  // Just under the cap: parsed (the comment is ignored).
  {
    std::ofstream f(big, std::ios::trunc);
    f << kGood << "#" << std::string(kMaxTopologyFileBytes - sizeof kGood - 2, 'x') << "\n";
  }
  ASSERT_LE(static_cast<int64_t>(std::filesystem::file_size(big)), kMaxTopologyFileBytes);
  Result<TopologySpec> at_cap = LoadTopologyFile(big);
  EXPECT_TRUE(at_cap.ok()) << at_cap.status().ToString();
  Result<TopologySpec> zero = LoadTopologyFile("/dev/zero");
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().message(),
            "/dev/zero: more than 2097152 bytes, topology files are at most 2097152 bytes (2 MiB)");
  Result<TopologySpec> directory = LoadTopologyFile(dir.str());
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().message(), dir.str() + ": is a directory");
  Result<TopologySpec> missing = LoadTopologyFile(dir.str() + "/none.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(),
            dir.str() + "/none.yaml: cannot read topology file: No such file or directory");
}

TEST(ConfigNodeTest, Durations) {
  EXPECT_EQ(ParseDurationMs("250ms"), 250);
  EXPECT_EQ(ParseDurationMs("10s"), 10'000);
  EXPECT_EQ(ParseDurationMs("5m"), 300'000);
  EXPECT_EQ(ParseDurationMs("1h"), 3'600'000);
  EXPECT_EQ(ParseDurationMs("7d"), 604'800'000);
  EXPECT_EQ(ParseDurationMs("42"), 42);
  EXPECT_FALSE(ParseDurationMs("").has_value());
  EXPECT_FALSE(ParseDurationMs("-1s").has_value());
  EXPECT_FALSE(ParseDurationMs("10 s").has_value());
  EXPECT_FALSE(ParseDurationMs("99999999999999999d").has_value());
}

}  // namespace
}  // namespace inferscope

namespace inferscope {
namespace {

TEST(ConfigNodeTest, ReportingAnErrorLeavesTheNodeUnchanged) {
  ConfigNode node("t.yaml", YAML::Load("pane: often\nother: 1\n"), "options");
  for (int i = 0; i < 2; ++i) {
    Result<int64_t> pane = node.GetDurationMs("pane", 1000);
    ASSERT_FALSE(pane.ok());
    EXPECT_NE(pane.status().message().find("options.pane: expected a duration"), std::string::npos)
        << pane.status().message();
  }
  EXPECT_TRUE(node.node().IsMap());
  EXPECT_TRUE(node.CheckKnownFields({"pane", "other"}).ok());
}

}  // namespace
}  // namespace inferscope
