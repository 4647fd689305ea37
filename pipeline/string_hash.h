#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace inferscope {

// Hashes std::string and std::string_view alike: an
// std::unordered_map<std::string, V, StringHash, std::equal_to<>> is searched with a string_view
// without building a string (C++20 heterogeneous lookup).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace inferscope
