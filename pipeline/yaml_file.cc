#include "pipeline/yaml_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>

#include "pipeline/scoped_fd.h"

namespace inferscope {
namespace {

// Notes where each document starts; every other event is ignored.
class DocumentStarts : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { last_start = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  YAML::Mark last_start = YAML::Mark::null_mark();
};

// Refuses a text holding more than one document, or one the parser cannot read to its end, with
// at most three calls of the parser (YAML::LoadAll's unbounded loop never ends on the latter).
Status CheckOneDocument(const std::string& text, const std::string& file) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts starts;
  if (!parser.HandleNextDocument(starts)) return Status::Ok();  // empty
  if (!parser.HandleNextDocument(starts)) return Status::Ok();  // one document
  const YAML::Mark second = starts.last_start;
  if (parser.HandleNextDocument(starts) && starts.last_start.pos == second.pos) {
    // The parser yields documents without advancing: bytes it can neither read nor reject.
    return Status::InvalidArgument(YamlMarkPrefix(file, second) +
                                   ": YAML syntax error: content the parser cannot read");
  }
  return Status::InvalidArgument(YamlMarkPrefix(file, second) +
                                 ": a second YAML document; a file holds one (remove the '---' "
                                 "or split the file)");
}

// yaml-cpp reports a tab in an indentation as whatever the tab broke ("illegal block entry", "end
// of sequence not found"): name it when the error's line, or the one before, is indented with one.
std::string TabHint(const std::string& text, const YAML::Mark& mark) {
  if (mark.line < 0) return {};
  int line = 0;
  size_t begin = 0;
  while (begin < text.size() && line <= mark.line) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    if (line >= mark.line - 1) {
      const size_t indent_end = text.find_first_not_of(" \t", begin);
      if (text.find('\t', begin) < std::min(indent_end, end)) {
        return " (line " + std::to_string(line + 1) +
               " is indented with a tab; YAML indents with spaces only)";
      }
    }
    begin = end + 1;
    ++line;
  }
  return {};
}

// A key given twice in one mapping is an error: yaml-cpp keeps the first value and drops the second
// silently. Walks the tree once, iteratively; a collection reached again through an alias (yaml-cpp
// shares aliased nodes) is skipped by its Mark, so an alias bomb costs time linear in the text.
Status CheckDuplicateKeys(const YAML::Node& doc, const std::string& file) {
  std::set<std::tuple<int, int, int>> visited;
  std::vector<YAML::Node> stack = {doc};
  while (!stack.empty()) {
    const YAML::Node node = stack.back();
    stack.pop_back();
    if (!node.IsMap() && !node.IsSequence()) continue;
    const YAML::Mark mark = node.Mark();
    if (!visited.emplace(mark.pos, mark.line, mark.column).second) continue;
    if (node.IsSequence()) {
      for (const YAML::Node& item : node) stack.push_back(item);
      continue;
    }
    std::set<std::string> keys;
    for (const auto& kv : node) {
      if (kv.first.IsScalar() && !keys.insert(kv.first.Scalar()).second) {
        return Status::InvalidArgument(YamlMarkPrefix(file, kv.first.Mark()) + ": duplicate key '" +
                                       kv.first.Scalar() + "' (given earlier in the same mapping)");
      }
      stack.push_back(kv.second);
    }
  }
  return Status::Ok();
}

}  // namespace

std::string YamlMarkPrefix(const std::string& file, const YAML::Mark& mark) {
  if (mark.line < 0) return file;
  return file + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

Result<YAML::Node> ParseYamlDocument(const std::string& text, const std::string& file) {
  YAML::Node doc;
  try {
    INFERSCOPE_RETURN_IF_ERROR(CheckOneDocument(text, file));
    doc = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's message for this is "bad file". Its guard counts parser calls, not brackets: a
    // few hundred nested collections reach it.
    return Status::InvalidArgument(YamlMarkPrefix(file, e.mark) +
                                   ": YAML syntax error: nested too deeply for the YAML parser");
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(YamlMarkPrefix(file, e.mark) + ": YAML syntax error: " + e.msg +
                                   TabHint(text, e.mark));
  }
  INFERSCOPE_RETURN_IF_ERROR(CheckDuplicateKeys(doc, file));
  return doc;
}

Result<std::string> ReadBoundedFile(const std::string& path, const std::string& what,
                                    int64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Status::NotFound(path + ": cannot read " + what + ": " + std::strerror(errno));
  }
  const ScopedFd closer(fd);
  std::string cap_text = what + "s are at most " + std::to_string(max_bytes) + " bytes";
  if (max_bytes % (int64_t{1} << 20) == 0) {
    cap_text += " (" + std::to_string(max_bytes >> 20) + " MiB)";
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + ": is a directory");
    if (S_ISREG(st.st_mode) && st.st_size > max_bytes) {
      return Status::InvalidArgument(path + ": " + std::to_string(st.st_size) + " bytes, " +
                                     cap_text);
    }
  }
  // At most the cap plus one byte, whatever the file claims (a FIFO, /dev/zero, a growing file).
  std::string text;
  char buf[64 * 1024];
  while (true) {
    // text.size() <= the cap here (more returns below), so this reads at most the cap + 1 bytes.
    const size_t want = std::min(sizeof buf, static_cast<size_t>(max_bytes) + 1 - text.size());
    const ssize_t n = ::read(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (errno == EISDIR) return Status::InvalidArgument(path + ": is a directory");
      return Status::InvalidArgument(path + ": cannot read " + what + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (static_cast<int64_t>(text.size()) > max_bytes) {
      return Status::InvalidArgument(path + ": more than " + std::to_string(max_bytes) +
                                     " bytes, " + cap_text);
    }
  }
  return text;
}

Result<YAML::Node> LoadYamlFile(const std::string& path, const std::string& what,
                                int64_t max_bytes) {
  Result<std::string> text = ReadBoundedFile(path, what, max_bytes);
  if (!text.ok()) return text.status();
  return ParseYamlDocument(*text, path);
}

}  // namespace inferscope
