#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/metrics.h"

namespace inferscope {

// What this binary is: inferscope's version, the git revision and build type it was configured
// from (cli/build_info.h), and the versions of the libraries it runs with (libzmq as loaded at
// run time; RocksDB and msgpack-c as compiled against).

// `inferscope --version`: several lines, "inferscope 0.1.0 (revision abc, Release)" first.
std::string VersionText();
// The same as a JSON object (/v1/health "build"): version, revision, build_type, libzmq, rocksdb,
// msgpack.
nlohmann::json BuildInfoJson();
// The labels of the inferscope_build_info gauge, in the order BuildInfoJson lists them.
Labels BuildInfoLabels();

}  // namespace inferscope
