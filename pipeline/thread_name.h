#pragma once

#include <pthread.h>

#include <string>
#include <string_view>

namespace inferscope {

// Names the calling thread (what `top -H`, /proc/PID/task/TID/comm and profilers show), cut to the
// 15 bytes Linux keeps. Best effort: a failure is ignored.
inline void SetThreadName(std::string_view name) {
  std::string cut(name.substr(0, 15));
  (void)pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace inferscope
