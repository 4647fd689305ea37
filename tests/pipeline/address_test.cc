#include "pipeline/address.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/test_util.h"

namespace inferscope {
namespace {

TEST(AddressTest, HostPortAcceptsWhatTheServerCanBind) {
  Result<HostPort> v4 = ParseHostPort("127.0.0.1:8080");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 8080);
  Result<HostPort> any = ParseHostPort("0.0.0.0:0");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->port, 0);
  Result<HostPort> v6 = ParseHostPort("[::1]:65535");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 65535);
}

TEST(AddressTest, HostPortRefusesBadPortsAndHosts) {
  for (const char* bad : {"127.0.0.1:abc", "127.0.0.1:99999", "127.0.0.1:-1", "127.0.0.1:", "abc",
                          ":8080", "::1:8080", "[::1:8080", "127.0.0.1:80x", "127.0.0.1:0080000"}) {
    Result<HostPort> r = ParseHostPort(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status().message();
    }
  }
  EXPECT_NE(ParseHostPort("h:99999").status().message().find("0..65535"), std::string::npos);
}

TEST(AddressTest, ZmqEndpoints) {
  for (const char* good : {"tcp://127.0.0.1:5555", "tcp://*:5555", "tcp://127.0.0.1:*",
                           "tcp://[::1]:5555", "tcp://engine.local:1", "tcp://eth0;10.0.0.1:5555",
                           "ipc:///tmp/x.sock", "inproc://ingest"}) {
    EXPECT_EQ(ZmqEndpointProblem(good), std::nullopt) << good;
  }
  for (const char* bad :
       {"not-an-endpoint", "tcp://127.0.0.1", "tcp://127.0.0.1:65536", "tcp://:5555",
        "tcp://127.0.0.1:abc", "udp://127.0.0.1:5555", "ipc://", "inproc://", "tcp://::1:5555"}) {
    std::optional<std::string> problem = ZmqEndpointProblem(bad);
    EXPECT_TRUE(problem.has_value()) << bad;
  }
  EXPECT_NE(ZmqEndpointProblem("udp://h:1")->find("unknown transport 'udp'"), std::string::npos);
  EXPECT_NE(ZmqEndpointProblem("tcp://h:99999")->find("0..65535"), std::string::npos);
}

TEST(AddressTest, StateDirMustBeADirectoryOrCreatable) {
  testing::TempDir dir;
  EXPECT_EQ(StateDirProblem(dir.str()), std::nullopt);
  EXPECT_EQ(StateDirProblem(dir.str() + "/new/deeper"), std::nullopt);
  std::string file = dir.str() + "/file";
  std::ofstream(file) << "x";
  ASSERT_TRUE(StateDirProblem(file).has_value());
  EXPECT_NE(StateDirProblem(file)->find("exists and is not a directory"), std::string::npos);
  ASSERT_TRUE(StateDirProblem(file + "/below").has_value());
  EXPECT_NE(StateDirProblem(file + "/below")->find("is not a directory"), std::string::npos);
  EXPECT_TRUE(StateDirProblem("").has_value());
}

}  // namespace
}  // namespace inferscope
