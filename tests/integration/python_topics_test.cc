// The Python client's topic helpers (clients/python/inferscope_client.py) build the same
// subscription prefixes as the C++ client's (clients/cpp/topics.h), which the sinks' topics are
// tested against (tests/sinks/topic_test.cc), and read them back.

#include <gtest/gtest.h>

#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "clients/cpp/topics.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 0x0f];
  }
  return out;
}

TEST(PythonTopicsTest, PythonPrefixesEqualTheCppOnesAndRoundTrip) {
  std::vector<std::string> names = {"vllm-1", "vllm-1.eu",   "10.0.0.5", "llama-3.1-8b", "50%",
                                    "a%2Eb",  "n\xc5\x93ud", "a b",      "x\x7f",        "~!:/@"};
  std::mt19937_64 rng(3);
  for (int i = 0; i < 40; ++i) {
    std::string name(1 + rng() % 12, '\0');
    for (char& c : name) c = rng() % 3 == 0 ? '.' : static_cast<char>(0x20 + rng() % 0x60);
    names.push_back(name);
  }
  testing::TempDir dir;
  const std::string out = dir.str() + "/prefixes.txt";
  std::vector<std::string> argv = {
      testing::Python(), testing::SourceDir() + "/tests/integration/topic_prefixes.py", out};
  for (const std::string& n : names) argv.push_back(Hex(n));
  testing::Subprocess python(argv, dir.str() + "/python.log");
  ASSERT_EQ(python.Wait(), 0) << testing::ReadFile(dir.str() + "/python.log");

  std::istringstream lines(testing::ReadFile(out));
  for (const std::string& n : names) {
    SCOPED_TRACE(n);
    std::string summary, alert, ok;
    ASSERT_TRUE(lines >> summary >> alert >> ok);
    EXPECT_EQ(summary, Hex(client::SummaryTopicPrefix(n, n)));
    EXPECT_EQ(alert, Hex(client::AlertTopicPrefix("critical", n, n)));
    EXPECT_EQ(ok, "ok");
  }
}

}  // namespace
}  // namespace inferscope
