#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

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

// A child process started with fork/exec. The destructor kills (SIGKILL) and reaps it if it is
// still running, so a failing test never leaves processes behind.
class Subprocess {
 public:
  // Starts `argv` with stdout and stderr appended to `log_path` (or inherited when empty).
  // Throws std::runtime_error when fork or exec fails.
  explicit Subprocess(const std::vector<std::string>& argv, const std::string& log_path = "");
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  void Signal(int sig);
  // Stops the process (SIGSTOP) and returns true once all its threads have stopped; false when it
  // exited first or had not stopped within `timeout`. kill() alone returns before a
  // multi-threaded process has stopped: each thread takes the stop when it next runs, and under
  // load some ran on for up to 17 ms (a third of 200 tries on nats-server), serving requests.
  bool Pause(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits up to `timeout` for exit; returns the exit code, 128+signal when killed, or -1 on
  // timeout.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  bool reaped_ = false;
};

// Polls `done` every few milliseconds until it returns true or `timeout` passes; returns its last
// answer. For waiting on asynchronous effects (a count reaching a value), never as a fixed sleep.
bool WaitFor(const std::function<bool()>& done,
             std::chrono::milliseconds timeout = std::chrono::seconds(20));

// The whole content of a file ("" when it cannot be read).
std::string ReadFile(const std::string& path);

// The repository root and the built `inferscope` binary (set by CMake).
std::string SourceDir();
std::string InferscopeBinary();
// Debian's python3 (it sees python3-zmq and python3-msgpack).
std::string Python();

}  // namespace inferscope::testing
