#include "pipeline/yaml_file.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/test_util.h"

namespace inferscope {
namespace {

// Inputs on which yaml-cpp 0.7's parser stops advancing: YAML::LoadAll looped forever on them,
// allocating until the fuzzer's memory limit (CI's topology fuzzer: 2.4 GB, timeout after 30 s),
// and YAML::Load returned a node for the part before, silently dropping the rest.
TEST(YamlFileTest, ContentTheParserCannotReadPastIsASyntaxErrorNotAHang) {
  const std::string inputs[] = {
      ",",
      ", a",
      std::string(",\xdb\xdb}\xdb\n\x8b#;"),
      std::string(", tynaee: miniFal\nsourBes:\n d - {name: iF\0\0\0n, typ#", 48),
      "# a comment\nkey: value\n,      mode: pull\n",
  };
  for (const std::string& text : inputs) {
    Result<YAML::Node> doc = ParseYamlDocument(text, "f.yaml");
    ASSERT_FALSE(doc.ok()) << text;
    EXPECT_EQ(doc.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(doc.status().message().find("f.yaml:"), std::string::npos) << doc.status().message();
    EXPECT_NE(doc.status().message().find("YAML syntax error"), std::string::npos)
        << doc.status().message();
  }
}

TEST(YamlFileTest, OneDocumentIsParsedAndASecondOneIsRefusedAtItsMarker) {
  Result<YAML::Node> one = ParseYamlDocument("---\na: 1\nb: [x, y]\n", "f.yaml");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ((*one)["a"].as<int>(), 1);
  EXPECT_EQ((*one)["b"].size(), 2u);
  // A document end marker with nothing after it is still one document.
  EXPECT_TRUE(ParseYamlDocument("a: 1\n...\n", "f.yaml").ok());

  Result<YAML::Node> two = ParseYamlDocument("a: 1\n---\nb: 2\n", "f.yaml");
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.status().message(),
            "f.yaml:2:1: a second YAML document; a file holds one (remove the '---' or split the "
            "file)");
  // An empty second document counts too: the `---` is a mistake the user should hear about.
  EXPECT_FALSE(ParseYamlDocument("a: 1\n---\n", "f.yaml").ok());
  Result<YAML::Node> three = ParseYamlDocument("a: 1\n---\nb: 2\n---\nc: 3\n", "f.yaml");
  ASSERT_FALSE(three.ok());
  EXPECT_NE(three.status().message().find("f.yaml:2:1: a second YAML document"), std::string::npos);
}

TEST(YamlFileTest, EmptyTextIsANullNodeAndSyntaxErrorsNameTheirPlace) {
  Result<YAML::Node> empty = ParseYamlDocument("", "f.yaml");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->IsNull());
  Result<YAML::Node> comments = ParseYamlDocument("# only a comment\n", "f.yaml");
  ASSERT_TRUE(comments.ok());
  EXPECT_TRUE(comments->IsNull());

  Result<YAML::Node> bad = ParseYamlDocument("a: 1\n]\n", "f.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "f.yaml:2:1: YAML syntax error: illegal flow end");
  Result<YAML::Node> dup = ParseYamlDocument("a: 1\nb: {c: 1, c: 2}\n", "f.yaml");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().message(),
            "f.yaml:2:11: duplicate key 'c' (given earlier in the same mapping)");
}

// yaml-cpp's own messages for these name neither cause: "illegal block entry" for a tab, "bad
// file" for nesting past its parser's depth guard.
TEST(YamlFileTest, ATabIndentAndDeepNestingAreNamed) {
  Result<YAML::Node> tab = ParseYamlDocument("name: t\nsources:\n\t- name: x\n", "f.yaml");
  ASSERT_FALSE(tab.ok());
  EXPECT_NE(tab.status().message().find(
                "f.yaml:3:2: YAML syntax error: illegal block entry (line 3 is indented with a "
                "tab; YAML indents with spaces only)"),
            std::string::npos)
      << tab.status().message();
  // A tab inside a value is no indentation.
  Result<YAML::Node> value_tab = ParseYamlDocument("a: [1,\t2]\nb: ]\n", "f.yaml");
  ASSERT_FALSE(value_tab.ok());
  EXPECT_EQ(value_tab.status().message().find("tab"), std::string::npos)
      << value_tab.status().message();

  const std::string deep = "a: " + std::string(1000, '[') + std::string(1000, ']') + "\n";
  Result<YAML::Node> nested = ParseYamlDocument(deep, "f.yaml");
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.status().message().find("YAML syntax error: nested too deeply"),
            std::string::npos)
      << nested.status().message();
  // A hundred levels are fine.
  EXPECT_TRUE(
      ParseYamlDocument("a: " + std::string(100, '[') + std::string(100, ']'), "f.yaml").ok());
}

TEST(YamlFileTest, LoadYamlFileReadsAtMostTheCapAndNamesTheKindOfFile) {
  testing::TempDir dir;
  const std::string path = dir.str() + "/c.yaml";
  {
    std::ofstream f(path);
    f << "a: 1\n# " << std::string(100, 'x') << "\n";
  }
  Result<YAML::Node> ok = LoadYamlFile(path, "config file");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)["a"].as<int>(), 1);
  Result<YAML::Node> small = LoadYamlFile(path, "config file", 64);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().message(), path + ": 108 bytes, config files are at most 64 bytes");
  Result<YAML::Node> zero = LoadYamlFile("/dev/zero", "config file");
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().message(),
            "/dev/zero: more than 2097152 bytes, config files are at most 2097152 bytes (2 MiB)");
  Result<YAML::Node> missing = LoadYamlFile(dir.str() + "/none.yaml", "config file");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
  EXPECT_EQ(missing.status().message(),
            dir.str() + "/none.yaml: cannot read config file: No such file or directory");
  Result<YAML::Node> directory = LoadYamlFile(dir.str(), "config file");
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().message(), dir.str() + ": is a directory");
}

}  // namespace
}  // namespace inferscope
