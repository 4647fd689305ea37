#include "tests/test_util.h"

#include <unistd.h>

#include <cstdlib>
#include <random>
#include <stdexcept>

namespace inferscope::testing {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "inferscope-test-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string SourceDir() { return INFERSCOPE_SOURCE_DIR; }
std::string InferscopeBinary() { return INFERSCOPE_BINARY; }
std::string Python() { return INFERSCOPE_PYTHON; }

}  // namespace inferscope::testing
