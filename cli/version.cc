#include "cli/version.h"

#include <rocksdb/version.h>
#include <zmq.h>

#include <msgpack/version.hpp>

#include "cli/build_info.h"

namespace inferscope {
namespace {

std::string LibzmqVersion() {
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::string RocksdbVersion() {
  return std::to_string(ROCKSDB_MAJOR) + "." + std::to_string(ROCKSDB_MINOR) + "." +
         std::to_string(ROCKSDB_PATCH);
}

}  // namespace

Labels BuildInfoLabels() {
  return {{"version", kBuildVersion},    {"revision", kBuildRevision},
          {"build_type", kBuildType},    {"libzmq", LibzmqVersion()},
          {"rocksdb", RocksdbVersion()}, {"msgpack", msgpack_version()}};
}

nlohmann::json BuildInfoJson() {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, value] : BuildInfoLabels()) j[key] = value;
  return j;
}

std::string VersionText() {
  return std::string("inferscope ") + kBuildVersion + " (revision " + kBuildRevision + ", " +
         (kBuildType[0] != '\0' ? kBuildType : "no build type") + " build)\n" + "libzmq " +
         LibzmqVersion() + ", RocksDB " + RocksdbVersion() + ", msgpack-c " + msgpack_version();
}

}  // namespace inferscope
