// `inferscope record`: receives protocol messages as an engine's zmq source would and writes each,
// byte for byte with its arrival time, to a recording file (cli/recording.h) for `replay`.

#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "cli/commands.h"
#include "cli/recording.h"
#include "pipeline/address.h"

namespace inferscope {
namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int RecordCommand(const RecordArgs& args) {
  if (args.connect.empty() == args.bind.empty()) {
    std::cerr << "record: give exactly one of --connect ENDPOINT (subscribe to a publisher's PUB "
                 "socket) and --bind ENDPOINT (receive from PUSH publishers in the engine's "
                 "place)\n";
    return 2;
  }
  const bool bind = !args.bind.empty();
  const std::string& endpoint = bind ? args.bind : args.connect;
  const char* flag = bind ? "--bind" : "--connect";
  if (std::optional<std::string> problem = ZmqEndpointProblem(endpoint)) {
    std::cerr << "record: " << flag << ": " << *problem << "\n";
    return 2;
  }
  std::string socket = args.socket;
  if (socket.empty()) socket = bind ? "pull" : "sub";
  if (socket != "pull" && socket != "sub") {
    std::cerr << "record: --socket: expected pull or sub, got '" << socket << "'\n";
    return 2;
  }
  if (socket == "pull" && !args.topics.empty()) {
    std::cerr << "record: --topic filters a sub socket; a pull socket takes every message\n";
    return 2;
  }
  if (!(args.duration_s >= 0) || !std::isfinite(args.duration_s)) {
    std::cerr << "record: --duration: expected seconds >= 0 (0: until SIGINT/SIGTERM)\n";
    return 2;
  }
  if (args.output.empty()) {
    std::cerr << "record: --output FILE is required\n";
    return 2;
  }
  auto writer = RecordingWriter::Create(args.output, args.force);
  if (!writer.ok()) {
    std::cerr << "record: --output: " << writer.status().message() << "\n";
    return 2;
  }

  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  // No deadline (0): the largest time point.
  const Clock::time_point deadline =
      args.duration_s > 0
          ? start + std::chrono::microseconds(static_cast<int64_t>(args.duration_s * 1e6))
          : Clock::time_point::max();
  uint64_t skipped = 0;  // messages not of 2 frames, or over the recording limits
  std::string bound;
  try {
    zmq::context_t ctx(1);
    zmq::socket_t sock(ctx, socket == "pull" ? zmq::socket_type::pull : zmq::socket_type::sub);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::rcvhwm, args.rcvhwm);
    // libzmq refuses (and disconnects) a peer sending more than a record can hold.
    sock.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxRecordedPayloadBytes));
    if (socket == "sub") {
      if (args.topics.empty()) sock.set(zmq::sockopt::subscribe, "");
      for (const std::string& t : args.topics) sock.set(zmq::sockopt::subscribe, t);
    }
    if (bind) {
      sock.bind(endpoint);
      bound = sock.get(zmq::sockopt::last_endpoint);
    } else {
      sock.connect(endpoint);
      bound = endpoint;
    }
    std::cerr << "record: " << (socket == "pull" ? "PULL" : "SUB") << " socket "
              << (bind ? "bound to " : "connected to ") << bound << ", writing to " << args.output
              << (args.duration_s > 0 ? " for " + std::to_string(args.duration_s) + " s"
                                      : std::string(" until SIGINT/SIGTERM"))
              << std::endl;
    if (!args.ready_file.empty()) {
      std::FILE* f = std::fopen(args.ready_file.c_str(), "w");
      if (f == nullptr) {
        spdlog::error("record: cannot write --ready-file {}", args.ready_file);
        return 1;
      }
      const std::string text = nlohmann::json{{"endpoint", bound}}.dump() + "\n";
      std::fwrite(text.data(), 1, text.size(), f);
      std::fclose(f);
    }
    zmq::message_t frames[2];
    zmq::message_t extra;
    bool dirty = false;
    Clock::time_point last_flush = start;
    while (!g_stop) {
      const Clock::time_point now = Clock::now();
      if (now >= deadline) break;
      // Buffered records reach the file when the socket is idle and at least every second.
      if (dirty && now - last_flush >= std::chrono::seconds(1)) {
        if (Status st = (*writer)->Flush(); !st.ok()) throw std::runtime_error(st.message());
        dirty = false;
        last_flush = now;
      }
      zmq::pollitem_t item = {sock.handle(), 0, ZMQ_POLLIN, 0};
      int ready = 0;
      try {
        ready = zmq::poll(&item, 1, std::chrono::milliseconds(100));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (ready == 0) {
        if (dirty) {
          if (Status st = (*writer)->Flush(); !st.ok()) throw std::runtime_error(st.message());
          dirty = false;
          last_flush = Clock::now();
        }
        continue;
      }
      // Drain what is queued; each message is written as it is taken off the socket.
      for (int n = 0; n < 4096; ++n) {
        if (!sock.recv(frames[0], zmq::recv_flags::dontwait)) break;
        const int64_t arrival = NowNs();
        size_t parts = 1;
        bool more = sock.get(zmq::sockopt::rcvmore);
        if (more) {
          (void)sock.recv(frames[1]);  // the rest of a multipart message is there already
          parts = 2;
          more = sock.get(zmq::sockopt::rcvmore);
          while (more) {
            (void)sock.recv(extra);
            ++parts;
            more = sock.get(zmq::sockopt::rcvmore);
          }
        }
        if (parts != 2) {
          if (skipped++ == 0) {
            spdlog::warn(
                "record: skipped a message of {} frames (the protocol has 2: topic, "
                "payload); later ones are only counted",
                parts);
          }
          continue;
        }
        const std::string_view topic(frames[0].data<char>(), frames[0].size());
        const std::string_view payload(frames[1].data<char>(), frames[1].size());
        if (Status st = (*writer)->Append(arrival, topic, payload); !st.ok()) {
          if (st.code() != Status::Code::kInvalidArgument) throw std::runtime_error(st.message());
          if (skipped++ == 0) spdlog::warn("record: skipped a message: {}", st.message());
          continue;
        }
        dirty = true;
      }
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("record: {} on {}", e.what(), endpoint);
    (void)(*writer)->Close();
    return 1;
  } catch (const std::runtime_error& e) {
    spdlog::error("record: {}", e.what());
    (void)(*writer)->Close();
    return 1;
  }
  if (Status st = (*writer)->Close(); !st.ok()) {
    spdlog::error("record: {}", st.message());
    return 1;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  spdlog::info("record: {} messages ({} bytes) from {} written to {} in {:.1f} s; {} skipped",
               (*writer)->records(), (*writer)->bytes(), bound, args.output, seconds, skipped);
  return 0;
}

}  // namespace inferscope
