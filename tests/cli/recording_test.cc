// The recording file of `record` and `replay` (cli/recording.h): records read back as written, and
// every way a file can be torn or corrupt reported with the offset of the bad record, nothing after
// it returned.

#include "cli/recording.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::ReadFile;
using testing::TempDir;

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Writes three records: ("metrics", "one"), ("", ""), ("metrics.b", 1000 bytes of 'x').
std::string WriteThree(const TempDir& dir) {
  const std::string path = dir.str() + "/three.isrec";
  auto w = RecordingWriter::Create(path, false);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE((*w)->Append(1'000'000'000, "metrics", "one").ok());
  EXPECT_TRUE((*w)->Append(1'500'000'000, "", "").ok());
  EXPECT_TRUE((*w)->Append(-5, "metrics.b", std::string(1000, 'x')).ok());
  EXPECT_EQ((*w)->records(), 3u);
  EXPECT_TRUE((*w)->Close().ok());
  return path;
}

constexpr uint64_t kSecond = kRecordingHeaderBytes + kRecordHeaderBytes + 7 + 3 +
                             kRecordTrailerBytes;  // offset of the second record
constexpr uint64_t kThird = kSecond + kRecordHeaderBytes + kRecordTrailerBytes;

TEST(RecordingTest, RecordsReadBackAsWritten) {
  TempDir dir;
  const std::string path = WriteThree(dir);
  EXPECT_TRUE(IsRecordingFile(path));
  EXPECT_EQ(std::filesystem::file_size(path), kThird + kRecordHeaderBytes + 9 + 1000 + 8);
  auto r = RecordingReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  RecordedMessage m;
  ASSERT_TRUE((*r)->Next(&m));
  EXPECT_EQ(m.arrival_ns, 1'000'000'000);
  EXPECT_EQ(m.topic, "metrics");
  EXPECT_EQ(m.payload, "one");
  EXPECT_EQ(m.offset, kRecordingHeaderBytes);
  ASSERT_TRUE((*r)->Next(&m));
  EXPECT_EQ(m.arrival_ns, 1'500'000'000);
  EXPECT_EQ(m.topic, "");
  EXPECT_EQ(m.payload, "");
  EXPECT_EQ(m.offset, kSecond);
  ASSERT_TRUE((*r)->Next(&m));
  EXPECT_EQ(m.arrival_ns, -5);
  EXPECT_EQ(m.topic, "metrics.b");
  EXPECT_EQ(m.payload, std::string(1000, 'x'));
  EXPECT_EQ(m.offset, kThird);
  EXPECT_FALSE((*r)->Next(&m));
  EXPECT_TRUE((*r)->status().ok()) << (*r)->status().ToString();
}

TEST(RecordingTest, AnExistingFileIsKeptUnlessOverwriteIsAsked) {
  TempDir dir;
  const std::string path = WriteThree(dir);
  auto again = RecordingWriter::Create(path, false);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("the file exists (use --force"), std::string::npos);
  auto forced = RecordingWriter::Create(path, true);
  ASSERT_TRUE(forced.ok()) << forced.status().ToString();
  ASSERT_TRUE((*forced)->Close().ok());
  EXPECT_EQ(std::filesystem::file_size(path), kRecordingHeaderBytes);
  auto missing_dir = RecordingWriter::Create(dir.str() + "/no/such/dir/x", false);
  ASSERT_FALSE(missing_dir.ok());
  EXPECT_NE(missing_dir.status().message().find("cannot create"), std::string::npos);
}

TEST(RecordingTest, OversizedMessagesAreRefusedAndNothingIsWritten) {
  TempDir dir;
  const std::string path = dir.str() + "/big.isrec";
  auto w = RecordingWriter::Create(path, false);
  ASSERT_TRUE(w.ok());
  Status st = (*w)->Append(1, std::string(kMaxRecordedTopicBytes + 1, 't'), "p");
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument) << st.ToString();
  ASSERT_TRUE((*w)->Close().ok());
  EXPECT_EQ(std::filesystem::file_size(path), kRecordingHeaderBytes);
}

TEST(RecordingTest, BadHeadersAreNamed) {
  TempDir dir;
  const std::string csv = dir.str() + "/a.csv";
  WriteFile(csv, "time,instance,model,e2e_ms\n");
  EXPECT_FALSE(IsRecordingFile(csv));
  auto not_rec = RecordingReader::Open(csv);
  ASSERT_FALSE(not_rec.ok());
  EXPECT_NE(not_rec.status().message().find("offset 0: not a recording"), std::string::npos)
      << not_rec.status().ToString();

  const std::string path = WriteThree(dir);
  std::string bytes = ReadFile(path);
  WriteFile(path, bytes.substr(0, 12));
  auto short_header = RecordingReader::Open(path);
  ASSERT_FALSE(short_header.ok());
  EXPECT_NE(short_header.status().message().find("offset 12: truncated header"), std::string::npos)
      << short_header.status().ToString();

  bytes[11] = 2;  // version 2
  WriteFile(path, bytes);
  auto future = RecordingReader::Open(path);
  ASSERT_FALSE(future.ok());
  EXPECT_NE(future.status().message().find("offset 8: recording version 2 (this build reads "
                                           "version 1)"),
            std::string::npos)
      << future.status().ToString();

  auto missing = RecordingReader::Open(dir.str() + "/missing");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Status::Code::kIOError);
}

// Reads every record; returns how many came before Next() stopped, and the final status.
std::pair<int, Status> ReadAll(const std::string& path) {
  auto r = RecordingReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return {-1, r.status()};
  RecordedMessage m;
  int n = 0;
  while ((*r)->Next(&m)) ++n;
  return {n, (*r)->status()};
}

TEST(RecordingTest, TornAndCorruptRecordsStopTheReadAtTheirOffset) {
  TempDir dir;
  const std::string path = WriteThree(dir);
  const std::string bytes = ReadFile(path);
  const std::string at_third = "offset " + std::to_string(kThird) + ": ";

  // Torn inside the third record's header, then inside its payload.
  WriteFile(path, bytes.substr(0, kThird + 5));
  auto [n1, st1] = ReadAll(path);
  EXPECT_EQ(n1, 2);
  EXPECT_NE(st1.message().find(at_third + "truncated record (5 of its 16 header bytes)"),
            std::string::npos)
      << st1.ToString();
  WriteFile(path, bytes.substr(0, bytes.size() - 1));
  auto [n2, st2] = ReadAll(path);
  EXPECT_EQ(n2, 2);
  EXPECT_NE(st2.message().find(at_third + "truncated record (1032 of 1033 bytes)"),
            std::string::npos)
      << st2.ToString();

  // A flipped payload byte of the first record: nothing is returned.
  std::string flipped = bytes;
  flipped[kSecond - kRecordTrailerBytes - 1] ^= 0x20;  // the first record's last payload byte
  WriteFile(path, flipped);
  auto [n3, st3] = ReadAll(path);
  EXPECT_EQ(n3, 0);
  EXPECT_NE(st3.message().find("offset 16: corrupt record (checksum mismatch)"), std::string::npos)
      << st3.ToString();

  // An absurd length is corruption, not an allocation.
  std::string huge = bytes;
  huge[kSecond + 12] = '\x7f';  // the second record's payload length
  WriteFile(path, huge);
  auto [n4, st4] = ReadAll(path);
  EXPECT_EQ(n4, 1);
  EXPECT_NE(st4.message().find("offset " + std::to_string(kSecond) +
                               ": corrupt record: topic "
                               "length 0, payload length 2130706432"),
            std::string::npos)
      << st4.ToString();
}

}  // namespace
}  // namespace inferscope
