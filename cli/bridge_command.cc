// `inferscope bridge`: ZeroMQ ingest (PULL, as the engine's default zmq source) into a NATS
// JetStream stream (as the engine's jetstream source reads it). Built with INFERSCOPE_JETSTREAM.

#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "cli/commands.h"
#include "clients/cpp/jetstream_publisher.h"
#include "pipeline/address.h"
#include "sources/envelope.h"
#include "sources/partition.h"

namespace inferscope {
namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

}  // namespace

int BridgeCommand(const BridgeArgs& args) {
  if (std::optional<std::string> problem = ZmqEndpointProblem(args.zmq_bind)) {
    std::cerr << "bridge: --zmq-bind: " << *problem << "\n";
    return 2;
  }
  if (!(args.duration_s >= 0) || !std::isfinite(args.duration_s)) {
    std::cerr << "bridge: --duration: expected seconds >= 0 (0: until SIGINT/SIGTERM)\n";
    return 2;
  }
  if (args.partitions < 1 || args.max_in_flight < 1) {
    std::cerr << "bridge: --partitions and --max-in-flight must be >= 1\n";
    return 2;
  }
  if (args.create_stream) {
    std::string error;
    if (!client::JetStreamPublisher::EnsureStream(args.nats_url, args.stream, args.subject_prefix,
                                                  &error, args.replicas)) {
      spdlog::error("bridge: {}", error);
      return 1;
    }
  }
  client::JetStreamPublisherOptions po;
  po.url = args.nats_url;
  po.stream = args.stream;
  po.subject_prefix = args.subject_prefix;
  po.partitions = static_cast<uint32_t>(args.partitions);
  po.publisher_id = "bridge";  // unused: the bridge publishes payloads as they came
  po.max_in_flight = args.max_in_flight;
  client::JetStreamPublisher pub(po);
  if (!pub.Connect()) {
    spdlog::error("bridge: {} (create the stream, or pass --create-stream)", pub.last_error());
    return 1;
  }

  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      args.duration_s > 0
          ? start + std::chrono::microseconds(static_cast<int64_t>(args.duration_s * 1e6))
          : Clock::time_point::max();
  uint64_t forwarded = 0;
  uint64_t skipped = 0;  // not 2 frames, or no readable envelope
  bool failed = false;
  // Publishes are asynchronous: the client resends what the stream refuses for a while (a leader
  // election) and counts as failed what it gives up or what the stream refuses for good. Its
  // outcomes are taken (Poll) after every poll of the socket and failures logged at once (at most
  // once a second) with the total, so a failing stream is visible while the bridge runs; the exit
  // code is then 1.
  uint64_t failures_logged = 0;
  Clock::time_point last_failure_log{};
  auto check_failures = [&] {
    pub.Poll();
    const uint64_t now_failed = pub.failed_messages();
    if (now_failed == failures_logged) return;
    failed = true;
    const Clock::time_point now = Clock::now();
    if (failures_logged != 0 && now - last_failure_log < std::chrono::seconds(1)) return;
    spdlog::error(
        "bridge: {} publishes to stream {} failed so far ({} new; the stream refused them, or did "
        "not acknowledge them until the resend deadline: they are lost)",
        now_failed, args.stream, now_failed - failures_logged);
    failures_logged = now_failed;
    last_failure_log = now;
  };
  std::string msg_id;
  try {
    zmq::context_t ctx(1);
    zmq::socket_t sock(ctx, zmq::socket_type::pull);
    sock.set(zmq::sockopt::linger, 0);
    sock.set(zmq::sockopt::rcvhwm, args.rcvhwm);
    sock.bind(args.zmq_bind);
    const std::string bound = sock.get(zmq::sockopt::last_endpoint);
    spdlog::info("bridge: PULL socket bound to {}, forwarding to stream {} on {} ({} partitions)",
                 bound, args.stream, args.nats_url, args.partitions);
    if (!args.ready_file.empty()) {
      std::FILE* f = std::fopen(args.ready_file.c_str(), "w");
      if (f == nullptr) {
        spdlog::error("bridge: cannot write --ready-file {}", args.ready_file);
        return 1;
      }
      const std::string text = nlohmann::json{{"endpoint", bound}}.dump() + "\n";
      std::fwrite(text.data(), 1, text.size(), f);
      std::fclose(f);
    }
    zmq::message_t frames[2];
    zmq::message_t extra;
    while (!g_stop && Clock::now() < deadline) {
      check_failures();
      zmq::pollitem_t item = {sock.handle(), 0, ZMQ_POLLIN, 0};
      try {
        if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) == 0) continue;
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      for (int n = 0; n < 4096; ++n) {
        if (!sock.recv(frames[0], zmq::recv_flags::dontwait)) break;
        size_t parts = 1;
        bool more = frames[0].more();
        if (more) {
          (void)sock.recv(frames[1]);  // the rest of a multipart message is there already
          parts = 2;
          more = frames[1].more();
          while (more) {
            (void)sock.recv(extra);
            ++parts;
            more = extra.more();
          }
        }
        const std::string_view payload(frames[1].data<char>(), parts == 2 ? frames[1].size() : 0);
        Envelope envelope;
        if (parts != 2 || !PeekEnvelope(payload, &envelope)) {
          if (skipped++ == 0) {
            spdlog::warn(
                "bridge: skipped a message that is not [topic, protocol-v1 payload]; later ones "
                "are only counted");
          }
          continue;
        }
        // The stream drops a message published twice within its duplicate window. Only with an
        // incarnation ("inc"): a fire-and-forget publisher that restarts numbers from 0 again, and
        // its new messages must not be taken for duplicates.
        msg_id.clear();
        if (envelope.has_seq && envelope.incarnation != 0) {
          msg_id.append(envelope.publisher);
          msg_id += ':';
          msg_id += std::to_string(envelope.incarnation);
          msg_id += ':';
          msg_id += std::to_string(envelope.seq);
        }
        const uint32_t partition =
            PartitionOf(envelope.publisher, static_cast<uint32_t>(args.partitions));
        if (!pub.PublishRaw(partition, payload, msg_id)) {
          spdlog::error("bridge: {}", pub.last_error());
          failed = true;
          g_stop = 1;
          break;
        }
        ++forwarded;
      }
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("bridge: {} on {}", e.what(), args.zmq_bind);
    return 1;
  }
  if (!pub.Flush()) {
    spdlog::error("bridge: {}", pub.last_error());
    failed = true;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  spdlog::info(
      "bridge: {} messages forwarded to stream {} in {:.1f} s; {} skipped; {} publishes failed",
      forwarded, args.stream, seconds, skipped, pub.failed_messages());
  return failed ? 1 : 0;
}

}  // namespace inferscope
