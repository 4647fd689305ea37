// libFuzzer target: the topology loader, as `inferscope check-topology` runs it.
//
// The input is the text of a topology file. It is parsed (ParseTopology: YAML → TopologySpec) and,
// when that succeeds, built (Engine::Build: ValidateTopology, then every stage created by its
// factory from its `options`, which validates every option value). Nothing is started: no socket,
// no RocksDB, no thread. Any input must give a spec or an InvalidArgument, never a crash, a hang or
// an exception; an error message must name the file.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "cli/builtins.h"
#include "cli/engine.h"
#include "pipeline/registry.h"
#include "pipeline/topology.h"

namespace {

constexpr char kFile[] = "fuzz.yaml";

const inferscope::Registry& Builtins() {
  static const inferscope::Registry* registry = [] {
    auto* r = new inferscope::Registry();
    inferscope::RegisterBuiltins(*r);
    return r;
  }();
  return *registry;
}

void CheckError(const inferscope::Status& status) {
  if (status.ok()) return;
  if (status.message().find(kFile) == std::string::npos &&
      status.message().find("<builder>") == std::string::npos) {
    // Every topology error points into the file (file:line:col: field: message).
    std::fprintf(stderr, "topology_fuzzer: error without a location: %s\n",
                 status.ToString().c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  Builtins();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace inferscope;
  // Topology files are small; very large inputs only slow the fuzzer down.
  if (size > 16 * 1024) return -1;
  const std::string text(reinterpret_cast<const char*>(data), size);
  Result<TopologySpec> spec = ParseTopology(text, kFile);
  if (!spec.ok()) {
    CheckError(spec.status());
    return 0;
  }
  Result<std::unique_ptr<Engine>> engine = Engine::Build(*spec, Builtins());
  if (!engine.ok()) CheckError(engine.status());
  return 0;
}
