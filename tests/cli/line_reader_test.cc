// The bounded line reader of `inferscope detect` and `replay` (cli/line_reader.h), on in-memory
// streams: lines, a last line without '\n', a line over the limit, a byte order mark.

#include "cli/line_reader.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <string_view>

namespace inferscope {
namespace {

TEST(LineReaderTest, ReadsLinesAndALastOneWithoutNewline) {
  std::istringstream in("a,1\n\nb,2");
  LineReader reader(in);
  std::string_view line;
  ASSERT_EQ(reader.Next(&line), LineReader::Outcome::kLine);
  EXPECT_EQ(line, "a,1");
  ASSERT_EQ(reader.Next(&line), LineReader::Outcome::kLine);
  EXPECT_EQ(line, "");
  ASSERT_EQ(reader.Next(&line), LineReader::Outcome::kLine);
  EXPECT_EQ(line, "b,2");
  EXPECT_EQ(reader.line_number(), 3);
  EXPECT_EQ(reader.Next(&line), LineReader::Outcome::kEnd);
}

TEST(LineReaderTest, ALineOverTheLimitIsDroppedAndReadingGoesOn) {
  std::istringstream in("x\n" + std::string(LineReader::kMaxLineBytes + 1, 'z') + "\ny\n" +
                        std::string(LineReader::kMaxLineBytes, 'w') + "\n");
  LineReader reader(in);
  std::string_view line;
  ASSERT_EQ(reader.Next(&line), LineReader::Outcome::kLine);
  EXPECT_EQ(reader.Next(&line), LineReader::Outcome::kTooLong);
  EXPECT_EQ(reader.line_number(), 2);
  ASSERT_EQ(reader.Next(&line), LineReader::Outcome::kLine);
  EXPECT_EQ(line, "y");
  ASSERT_EQ(reader.Next(&line), LineReader::Outcome::kLine);  // exactly the limit is kept
  EXPECT_EQ(line.size(), LineReader::kMaxLineBytes);
  EXPECT_EQ(reader.Next(&line), LineReader::Outcome::kEnd);
}

// A CSV saved by a spreadsheet starts with a UTF-8 byte order mark: the header must still read as
// "time,..." (replay said "the header has no 'time' column"). Only at the start of the input.
TEST(LineReaderTest, AByteOrderMarkAtTheStartIsNotPartOfTheFirstLine) {
  std::istringstream in("\xEF\xBB\xBFtime,value\n\xEF\xBB\xBFx\n");
  LineReader reader(in);
  std::string_view line;
  ASSERT_EQ(reader.Next(&line), LineReader::Outcome::kLine);
  EXPECT_EQ(line, "time,value");
  ASSERT_EQ(reader.Next(&line), LineReader::Outcome::kLine);
  EXPECT_EQ(line, "\xEF\xBB\xBFx");
}

}  // namespace
}  // namespace inferscope
