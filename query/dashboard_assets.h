#pragma once

// The dashboard's static files (query/dashboard/), embedded in the binary at build time by
// cmake/embed_files.cmake: the query API serves them from memory, with no file lookup at run time.

#include <string_view>
#include <vector>

namespace inferscope {

struct EmbeddedFile {
  std::string_view path;  // relative to query/dashboard/, e.g. "index.html", "vendor/uPlot.min.css"
  std::string_view data;
};

// Every embedded file, in the order CMake listed them.
const std::vector<EmbeddedFile>& EmbeddedFiles();

}  // namespace inferscope
