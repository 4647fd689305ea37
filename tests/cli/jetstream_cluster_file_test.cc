// `inferscope node --cluster FILE` on bad cluster files and a bad topology for a node: exit code 2
// and one error naming the file, line and field — never a crash (yaml-cpp conversions of a list
// where a name belongs used to throw past main). No NATS server is needed: the files are checked
// before connecting.

#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::ReadFile;
using testing::Subprocess;
using testing::TempDir;

struct NodeRun {
  int code = -1;
  std::string output;
};

NodeRun Node(const TempDir& dir, const std::string& topology, const std::string& cluster_text) {
  static int n = 0;
  const std::string cluster = dir.str() + "/cluster" + std::to_string(++n) + ".yaml";
  std::ofstream(cluster) << cluster_text;
  const std::string log = dir.str() + "/node" + std::to_string(n) + ".log";
  Subprocess p({testing::InferscopeBinary(), "node", "--topology", topology, "--cluster", cluster,
                "--state-dir", dir.str() + "/state"},
               log);
  NodeRun r;
  r.code = p.Wait(std::chrono::seconds(30));
  r.output = ReadFile(log);
  return r;
}

std::string NodeTopology() { return testing::SourceDir() + "/topologies/jetstream-node.yaml"; }

TEST(ClusterFileTest, BadFilesAreRefusedWithFileLineAndField) {
  TempDir dir;
  const std::string head = "node: n\nurl: nats://127.0.0.1:1\n";
  struct Case {
    std::string text;
    std::string expect;  // in the error line
  };
  const std::vector<Case> cases = {
      {head + "slots: {a: [0]}\nprefer: [[a]]\n", ":4:9: prefer: expected a list of slot names"},
      {head + "slots: {[x]: [0]}\n", ":3:8: slots: a slot name must be a string"},
      {head + "slots: {a: [0, 0.5]}\n", "slots: slot 'a': partitions are numbers 0..65535"},
      {head + "slots: {a: [0], b: [0]}\n", "slots: partition 0 is in two slots"},
      {head + "slots: {a: [0]}\nprefer: [c]\n", "prefer: 'c' is not a slot"},
      {head + "slots: {a: [0]}\nleases: {ttl: fast}\n", ":4:15: leases.ttl: expected a duration"},
      {head + "slots: {a: [0]}\nleases: 3\n", ":4:9: leases: expected a mapping"},
      {head + "slots: {a: [0]}\nbogus: 1\n", ":4:1: bogus: unknown field"},
      {"node: [n]\n", ":1:7: node: expected a string"},
      {head, "slots: required"},
      {"node: n\nslots: {a: [0\n", "cluster"},  // not YAML: yaml-cpp's message, with the file
  };
  for (const Case& c : cases) {
    const NodeRun r = Node(dir, NodeTopology(), c.text);
    EXPECT_EQ(r.code, 2) << c.text << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.text << "\n" << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
  }
}

TEST(ClusterFileTest, ANodeTopologyWithABadDurableIsRefused) {
  TempDir dir;
  std::string topology = ReadFile(NodeTopology());
  const size_t at = topology.find("durable:");
  ASSERT_NE(at, std::string::npos);
  const size_t eol = topology.find('\n', at);
  topology.replace(at, eol - at, "durable: [x]");
  const std::string path = dir.str() + "/topology.yaml";
  std::ofstream(path) << topology;
  const NodeRun r = Node(dir, path, "node: n\nurl: nats://127.0.0.1:1\nslots: {a: [0]}\n");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("options.durable: expected a string"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace inferscope
