#include "auth/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <string>

#include <zmq.hpp>

#include "clients/cpp/curve.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::TempDir;
using testing::WaitFor;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

CurveKeyPair NewPair() {
  Result<CurveKeyPair> pair = GenerateCurveKeyPair();
  EXPECT_TRUE(pair.ok()) << pair.status().ToString();
  return *pair;
}

TEST(CurveTest, LibzmqHasCurve) {
  // Debian's libzmq is built with libsodium; everything else here depends on it.
  EXPECT_TRUE(CurveAvailable());
}

TEST(CurveTest, GlobMatch) {
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("*", "anything"));
  EXPECT_TRUE(GlobMatch("alice", "alice"));
  EXPECT_FALSE(GlobMatch("alice", "alice2"));
  EXPECT_FALSE(GlobMatch("alice", "alic"));
  EXPECT_TRUE(GlobMatch("alice-*", "alice-"));
  EXPECT_TRUE(GlobMatch("alice-*", "alice-gpu-3"));
  EXPECT_FALSE(GlobMatch("alice-*", "bob-alice-3"));
  EXPECT_TRUE(GlobMatch("*-eu-?", "vllm-eu-1"));
  EXPECT_FALSE(GlobMatch("*-eu-?", "vllm-eu-12"));
  EXPECT_TRUE(GlobMatch("a*b*c", "a-x-b-y-b-c"));
  EXPECT_FALSE(GlobMatch("a*b*c", "a-x-b-y-b-d"));
  EXPECT_TRUE(GlobMatch("**", "x"));
}

TEST(CurveTest, KeygenFilesRoundTripAndTheSecretIsPrivate) {
  TempDir dir;
  const std::string base = dir.str() + "/engine";
  const CurveKeyPair pair = NewPair();
  ASSERT_TRUE(WriteCurveKeyFiles(base, pair, /*overwrite=*/false).ok());

  struct stat st {};
  ASSERT_EQ(::stat((base + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Result<std::string> secret = ReadCurveKeyFile(base + ".key");
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_EQ(*secret, pair.secret_key);
  Result<std::string> pub = ReadCurveKeyFile(base + ".pub");
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(*pub, pair.public_key);
  Result<std::string> derived = CurvePublicKey(*secret);
  ASSERT_TRUE(derived.ok());
  EXPECT_EQ(*derived, pair.public_key);

  // The client library reads the same files.
  client::CurveClientKeys keys;
  std::string error;
  ASSERT_TRUE(client::LoadCurveClientKeys(base + ".key", base + ".pub", &keys, &error)) << error;
  EXPECT_EQ(keys.public_key, pair.public_key);

  // No silent overwrite; with overwrite a 0644 secret becomes 0600 again.
  Status again = WriteCurveKeyFiles(base, NewPair(), /*overwrite=*/false);
  EXPECT_FALSE(again.ok());
  EXPECT_NE(again.message().find("exists"), std::string::npos) << again.ToString();
  ASSERT_EQ(::chmod((base + ".key").c_str(), 0644), 0);
  ASSERT_TRUE(WriteCurveKeyFiles(base, NewPair(), /*overwrite=*/true).ok());
  ASSERT_EQ(::stat((base + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(CurveTest, ReadKeyFileNamesTheBadLine) {
  TempDir dir;
  WriteText(dir.str() + "/bad.key", "# comment\nnot-a-key\n");
  Result<std::string> key = ReadCurveKeyFile(dir.str() + "/bad.key");
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("bad.key:2"), std::string::npos) << key.status().ToString();
  WriteText(dir.str() + "/empty.key", "# nothing\n");
  EXPECT_FALSE(ReadCurveKeyFile(dir.str() + "/empty.key").ok());
  EXPECT_FALSE(ReadCurveKeyFile(dir.str() + "/missing.key").ok());
}

TEST(AuthorizedKeysTest, ParsesKeysGlobsAndComments) {
  const CurveKeyPair a = NewPair();
  const CurveKeyPair b = NewPair();
  const std::string text = "# publishers\n\n" + a.public_key + " alice,alice-*  # Alice's fleet\n" +
                           "  " + b.public_key + "\tbob\n" + "#" + a.public_key + " commented\n";
  Result<std::shared_ptr<const AuthorizedKeys>> keys = AuthorizedKeys::Parse(text, "keys", true);
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ((*keys)->size(), 2u);
  const AuthorizedKeys::Entry* alice = (*keys)->Find(a.public_key);
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->line, 3);
  EXPECT_TRUE(alice->MayPublishAs("alice"));
  EXPECT_TRUE(alice->MayPublishAs("alice-7"));
  EXPECT_FALSE(alice->MayPublishAs("bob"));
  const AuthorizedKeys::Entry* bob = (*keys)->Find(b.public_key);
  ASSERT_NE(bob, nullptr);
  EXPECT_TRUE(bob->MayPublishAs("bob"));
  EXPECT_FALSE(bob->MayPublishAs("alice"));
  EXPECT_EQ((*keys)->Find(NewPair().public_key), nullptr);
}

TEST(AuthorizedKeysTest, RejectsMalformedLinesNamingThem) {
  const CurveKeyPair a = NewPair();
  struct Case {
    std::string text;
    bool require_globs;
    std::string expect;
  };
  const Case cases[] = {
      {"short-key alice\n", true, "keys:1: expected"},
      {"# ok\n" + a.public_key + "\n", true, "keys:2: no publisher-id glob"},
      {a.public_key + " alice, bob\n", true, "keys:1: unexpected"},
      {a.public_key + " alice,,bob\n", true, "keys:1: empty"},
      {a.public_key + " a\n" + a.public_key + " b\n", true, "keys:2: key listed twice"},
  };
  for (const Case& c : cases) {
    Result<std::shared_ptr<const AuthorizedKeys>> keys =
        AuthorizedKeys::Parse(c.text, "keys", c.require_globs);
    ASSERT_FALSE(keys.ok()) << c.text;
    EXPECT_NE(keys.status().message().find(c.expect), std::string::npos)
        << keys.status().ToString();
  }
  // Subscribers' keys need no globs.
  EXPECT_TRUE(AuthorizedKeys::Parse(a.public_key + "\n", "keys", false).ok());
}

TEST(CurveOptionsTest, ReadsFilesRelativeToTheTopologyAndReportsTheField) {
  TempDir dir;
  const CurveKeyPair server = NewPair();
  const CurveKeyPair client = NewPair();
  ASSERT_TRUE(WriteCurveKeyFiles(dir.str() + "/engine", server, false).ok());
  WriteText(dir.str() + "/publishers", client.public_key + " *\n");
  const std::string topology = dir.str() + "/topology.yaml";

  ConfigNode node(topology,
                  YAML::Load("curve: {server_secret_key_file: engine.key, "
                             "authorized_keys_file: publishers}"),
                  "sources[0].options");
  Result<CurveServerOptions> options = ParseCurveServerOptions(node, true);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_TRUE(options->enabled());
  EXPECT_EQ(options->server_public_key, server.public_key);
  EXPECT_NE(options->authorized_keys->Find(client.public_key), nullptr);

  ConfigNode none(topology, YAML::Load("endpoint: x"), "sources[0].options");
  Result<CurveServerOptions> off = ParseCurveServerOptions(none, true);
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->enabled());

  ConfigNode missing(topology,
                     YAML::Load("curve: {server_secret_key_file: engine.key, "
                                "authorized_keys_file: nope}"),
                     "sources[0].options");
  Result<CurveServerOptions> bad = ParseCurveServerOptions(missing, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("sources[0].options.curve.authorized_keys_file"),
            std::string::npos)
      << bad.status().ToString();

  ConfigNode typo(topology, YAML::Load("curve: {secret: engine.key}"), "sources[0].options");
  EXPECT_FALSE(ParseCurveServerOptions(typo, true).ok());
}

// A PULL CurveZMQ server with its ZAP handler: a listed client key gets through, an unknown key
// and a client without keys do not, and the refused handshake is counted.
TEST(CurveServerTest, AdmitsListedKeysOnly) {
  const CurveKeyPair server_keys = NewPair();
  const CurveKeyPair good = NewPair();
  const CurveKeyPair stranger = NewPair();
  CurveServerOptions options;
  options.server_secret_key = server_keys.secret_key;
  options.server_public_key = server_keys.public_key;
  Result<std::shared_ptr<const AuthorizedKeys>> keys =
      AuthorizedKeys::Parse(good.public_key + " *\n", "keys", true);
  ASSERT_TRUE(keys.ok());
  options.authorized_keys = *keys;

  MetricsRegistry metrics;
  zmq::context_t ctx(1);
  CurveServer server(options, "test", &metrics, "test_auth_failures_total", {});
  ASSERT_TRUE(server.Start(ctx).ok());
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.set(zmq::sockopt::linger, 0);
  server.Configure(pull);
  pull.bind("tcp://127.0.0.1:*");
  const std::string endpoint = pull.get(zmq::sockopt::last_endpoint);

  zmq::context_t client_ctx(1);
  auto client = [&](const CurveKeyPair* pair) {
    auto push = std::make_unique<zmq::socket_t>(client_ctx, zmq::socket_type::push);
    push->set(zmq::sockopt::linger, 0);
    if (pair != nullptr) {
      client::CurveClientKeys k{server_keys.public_key, pair->secret_key, ""};
      std::string error;
      EXPECT_TRUE(client::ApplyCurveClientKeys(*push, k, &error)) << error;
    }
    push->connect(endpoint);
    return push;
  };
  auto plain = client(nullptr);
  auto refused = client(&stranger);
  plain->send(zmq::str_buffer("plain"), zmq::send_flags::dontwait);
  refused->send(zmq::str_buffer("stranger"), zmq::send_flags::dontwait);
  ASSERT_TRUE(WaitFor([&] { return server.failures() >= 1; }));

  auto admitted = client(&good);
  admitted->send(zmq::str_buffer("good"), zmq::send_flags::none);
  zmq::message_t msg;
  pull.set(zmq::sockopt::rcvtimeo, 20'000);
  ASSERT_TRUE(pull.recv(msg));
  EXPECT_EQ(msg.to_string(), "good");
  EXPECT_STREQ(zmq_msg_gets(msg.handle(), "User-Id"), good.public_key.c_str());
  // Nothing else was queued: the refused and the plain client never got in.
  EXPECT_FALSE(pull.recv(msg, zmq::recv_flags::dontwait));
  EXPECT_EQ(metrics.GetCounter("test_auth_failures_total", "")->value(), server.failures());
  EXPECT_GE(server.admitted(), 1u);

  pull.close();
  server.Stop();
}

}  // namespace
}  // namespace inferscope
