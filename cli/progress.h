#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace inferscope {

// A progress line on stderr for long commands (detect, simulate, check-topology), redrawn in
// place at most four times a second and erased at the end. Shown only when stderr is a terminal:
// in pipes and log files a command stays quiet.
class Progress {
 public:
  explicit Progress(bool wanted = true) : enabled_(wanted && isatty(STDERR_FILENO) == 1) {}
  ~Progress() { Done(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  bool enabled() const { return enabled_; }
  // True when a redraw is due (so callers format the text only then).
  bool Due() const {
    return enabled_ && std::chrono::steady_clock::now() - last_ >= std::chrono::milliseconds(250);
  }
  void Show(const std::string& text) {
    if (!enabled_) return;
    last_ = std::chrono::steady_clock::now();
    std::fprintf(stderr, "\r%s\x1b[K", text.c_str());
    std::fflush(stderr);
    shown_ = true;
  }
  // Erases the line (before other output, and at the end).
  void Done() {
    if (!shown_) return;
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
    shown_ = false;
  }

 private:
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace inferscope
