#pragma once

#include <filesystem>
#include <string>

namespace inferscope::testing {

// A fresh directory under the system temp dir, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// The repository root and the built `inferscope` binary (set by CMake).
std::string SourceDir();
std::string InferscopeBinary();
// Debian's python3 (it sees python3-zmq and python3-msgpack).
std::string Python();

}  // namespace inferscope::testing
