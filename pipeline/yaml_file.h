#pragma once

#include <cstdint>
#include <string>

#include <yaml-cpp/yaml.h>

#include "pipeline/status.h"

namespace inferscope {

// One YAML document, from text or from a file: how every configuration file of inferscope is read
// (topologies, the cluster file, detect --config, file_sd target lists).
//
// yaml-cpp 0.7 (Debian 12) has traps this avoids. YAML::LoadAll never returns on some malformed
// inputs: its parser stops advancing and yields empty documents forever, allocating until memory
// runs out (a 9-byte file took 2 GB and 30 s in the topology fuzzer). YAML::Load reads the first
// document and silently ignores whatever follows: a second document, or bytes the parser cannot
// read past. And a key given twice in one mapping keeps its first value, the second dropped.

// The largest configuration file read: 2 MiB. The shipped topologies are a few KB; yaml-cpp takes
// about 100-270x a file's size in memory (4.8 MB took 1.26 GB), so a larger file is refused before
// it is parsed.
inline constexpr int64_t kMaxYamlFileBytes = int64_t{2} << 20;

// Parses `text` as exactly one YAML document. InvalidArgument, as "file:line:col: message", for a
// syntax error, a second document (after `---`), content the parser cannot read past, or a key
// that appears twice in one mapping (naming the second). Empty text gives a null node.
Result<YAML::Node> ParseYamlDocument(const std::string& text, const std::string& file);

// Reads a whole file of at most `max_bytes`: NotFound when it cannot be opened (with the errno
// reason), InvalidArgument for a directory or a larger file. At most max_bytes + 1 bytes are read,
// whatever the file claims, so /dev/zero, a FIFO or a growing file is refused too. `what` names
// the kind of file in errors ("cannot read topology file: ...").
Result<std::string> ReadBoundedFile(const std::string& path, const std::string& what,
                                    int64_t max_bytes = kMaxYamlFileBytes);

// ReadBoundedFile, then ParseYamlDocument (errors name `path`).
Result<YAML::Node> LoadYamlFile(const std::string& path, const std::string& what,
                                int64_t max_bytes = kMaxYamlFileBytes);

// "file:line:col" for a mark yaml-cpp set (1-based), `file` alone for one it did not.
std::string YamlMarkPrefix(const std::string& file, const YAML::Mark& mark);

}  // namespace inferscope
