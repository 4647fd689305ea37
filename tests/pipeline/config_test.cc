#include "pipeline/config.h"

#include <gtest/gtest.h>

#include <string>

namespace inferscope {
namespace {

ConfigNode Parse(const std::string& yaml) {
  return ConfigNode("t.yaml", YAML::Load(yaml), "sources[0].options");
}

TEST(ConfigNodeTest, GettersReturnValuesAndDefaults) {
  ConfigNode n = Parse("name: a\ncount: 12\nratio: 0.5\nflag: yes\npane: 10s\nbare: 250\n");
  EXPECT_EQ(*n.GetString("name"), "a");
  EXPECT_EQ(*n.GetString("missing", "dflt"), "dflt");
  EXPECT_EQ(*n.GetInt("count"), 12);
  EXPECT_EQ(*n.GetInt("missing", 7), 7);
  EXPECT_EQ(*n.GetDouble("ratio"), 0.5);
  EXPECT_TRUE(*n.GetBool("flag"));
  EXPECT_FALSE(*n.GetBool("missing", false));
  EXPECT_EQ(*n.GetDurationMs("pane"), 10'000);
  EXPECT_EQ(*n.GetDurationMs("bare"), 250);  // a bare integer is milliseconds
  EXPECT_TRUE(n.Has("name"));
  EXPECT_FALSE(n.Has("missing"));
}

TEST(ConfigNodeTest, ErrorsNameFileLineColumnAndFieldPath) {
  ConfigNode n = Parse("name: a\ncount: twelve\n");
  Status s = n.GetInt("count").status();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s.message(), "t.yaml:2:8: sources[0].options.count: expected an integer, got 'twelve'");
  // A missing required field is located at the mapping itself.
  s = n.GetString("endpoint").status();
  EXPECT_EQ(s.message(), "t.yaml:1:1: sources[0].options.endpoint: required field is missing");
}

TEST(ConfigNodeTest, RangesAndTypesAreChecked) {
  ConfigNode n = Parse("count: 0\nratio: 2.5\nflag: maybe\npane: 10x\nshort: 5ms\nlist: [1]\n");
  EXPECT_NE(n.GetInt("count", std::nullopt, 1).status().message().find("must be between 1 and"),
            std::string::npos);
  EXPECT_FALSE(n.GetDouble("ratio", std::nullopt, 0, 1).ok());
  EXPECT_FALSE(n.GetBool("flag").ok());
  EXPECT_NE(n.GetDurationMs("pane").status().message().find("expected a duration"),
            std::string::npos);
  EXPECT_NE(n.GetDurationMs("short", std::nullopt, 100).status().message().find("at least 100ms"),
            std::string::npos);
  EXPECT_NE(n.GetString("list").status().message().find("expected a string"), std::string::npos);
}

TEST(ConfigNodeTest, ChildrenExtendThePathAndUnknownFieldsAreCaught) {
  ConfigNode n = Parse("detector: {warmup: 20, alpah: 0.1}\nscalar: 3\n");
  Result<ConfigNode> child = n.Child("detector");
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  EXPECT_EQ(child->path(), "sources[0].options.detector");
  EXPECT_EQ(child->file(), "t.yaml");
  Status s = child->CheckKnownFields({"warmup", "alpha"});
  EXPECT_EQ(s.message(),
            "t.yaml:1:24: sources[0].options.detector.alpah: unknown field (known: warmup, alpha)");
  EXPECT_TRUE(child->CheckKnownFields({"warmup", "alpah"}).ok());
  // An absent child is an empty mapping; a scalar is not a mapping.
  Result<ConfigNode> absent = n.Child("nothing");
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->Has("warmup"));
  EXPECT_FALSE(n.Child("scalar").ok());
}

TEST(ConfigNodeTest, BuilderNodesHaveNoLineNumbers) {
  ConfigNode built;
  EXPECT_EQ(built.file(), "<builder>");
  EXPECT_EQ(built.GetInt("n").status().message(), "<builder>: n: required field is missing");
}

TEST(ConfigNodeTest, EndpointsAreCheckedAtLoadTime) {
  ConfigNode n = Parse("good: tcp://127.0.0.1:5555\nbad: tcp:/127.0.0.1\n");
  EXPECT_EQ(*n.GetEndpoint("good"), "tcp://127.0.0.1:5555");
  EXPECT_FALSE(n.GetEndpoint("bad").ok());
}

TEST(ParseDurationMsTest, UnitsAndOverflow) {
  EXPECT_EQ(ParseDurationMs("250ms"), 250);
  EXPECT_EQ(ParseDurationMs("5m"), 300'000);
  EXPECT_EQ(ParseDurationMs("7d"), 7 * 86'400'000LL);
  EXPECT_EQ(ParseDurationMs("0"), 0);
  EXPECT_FALSE(ParseDurationMs("-1s").has_value());
  EXPECT_FALSE(ParseDurationMs("1w").has_value());
  EXPECT_FALSE(ParseDurationMs("").has_value());
  EXPECT_FALSE(ParseDurationMs("9223372036854775807d").has_value());
}

}  // namespace
}  // namespace inferscope
