// `inferscope tail`: subscribe to the alert stream and print one line per alert.

#include <signal.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <unordered_map>

#include <spdlog/spdlog.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "alerting/alert.h"
#include "cli/commands.h"
#include "clients/cpp/curve.h"
#include "clients/cpp/topics.h"
#include "pipeline/address.h"
#include "pipeline/config.h"
#include "pipeline/json_text.h"

namespace inferscope {
namespace {

// Topics whose topic_seq is followed; as many as a stream sink numbers (sinks/stream_sink.h).
constexpr size_t kMaxTopics = size_t{1} << 18;

using nlohmann::json;

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

// A msgpack value as JSON (maps with string keys, arrays, scalars; bin as a string).
json ToJson(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL:
      return nullptr;
    case msgpack::type::BOOLEAN:
      return o.via.boolean;
    case msgpack::type::POSITIVE_INTEGER:
      return o.via.u64;
    case msgpack::type::NEGATIVE_INTEGER:
      return o.via.i64;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      return o.via.f64;
    case msgpack::type::STR:
      return std::string(o.via.str.ptr, o.via.str.size);
    case msgpack::type::BIN:
      return std::string(o.via.bin.ptr, o.via.bin.size);
    case msgpack::type::ARRAY: {
      json a = json::array();
      for (uint32_t i = 0; i < o.via.array.size; ++i) a.push_back(ToJson(o.via.array.ptr[i]));
      return a;
    }
    case msgpack::type::MAP: {
      json m = json::object();
      for (uint32_t i = 0; i < o.via.map.size; ++i) {
        const msgpack::object& k = o.via.map.ptr[i].key;
        std::string key = k.type == msgpack::type::STR ? std::string(k.via.str.ptr, k.via.str.size)
                                                       : ToJsonText(ToJson(k));
        m[key] = ToJson(o.via.map.ptr[i].val);
      }
      return m;
    }
    default:
      return nullptr;
  }
}

std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string("-");
}

std::string Num(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", it->get<double>());
  return buf;
}

std::string LocalTime(int64_t ms) {
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  localtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  char out[40];
  std::snprintf(out, sizeof(out), "%s.%03d", buf, static_cast<int>(ms % 1000));
  return out;
}

// The limit a threshold alert is shown against: the threshold of its own severity (`limit`),
// or, from an engine that did not send it, the lowest level's (`expected`).
std::string Limit(const json& a) {
  const std::string limit = Num(a, "limit");
  return limit != "-" ? limit : Num(a, "expected");
}

// One line for a person at a terminal: local time of detection, severity, state, series, the
// statistic and its value against the limit of its severity (rules) or the expected value, range
// and score (detectors), then the type. `wide` adds rule, fingerprint and the message.
std::string FormatAlertLine(const json& a, bool wide) {
  const int64_t detected = a.value("detected_at", int64_t{0});
  std::string state = Str(a, "state");
  for (char& c : state) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string line = LocalTime(detected) + "  " + Str(a, "severity") + "  " + state + "  " +
                     Str(a, "instance") + "/" + Str(a, "model") + "  " + Str(a, "metric") + ":" +
                     Str(a, "stat") + " = " + Num(a, "value");
  const std::string type = Str(a, "type");
  if (type == "threshold") {
    line += " (limit " + Limit(a) + ")";
  } else if (wide) {
    line += " (expected " + Num(a, "expected") + ", range " + Num(a, "lower") + ".." +
            Num(a, "upper") + ", score " + Num(a, "score") + ")";
  } else {
    line += " (expected " + Num(a, "expected") + ", score " + Num(a, "score") + ")";
  }
  if (wide) {
    line += "  [" + type + ", " + Str(a, "rule") + ", " + Str(a, "fingerprint") + "]  " +
            Str(a, "message");
  } else {
    line += "  [" + type + "]";
  }
  return line;
}

// The width lines are cut to: the terminal's when stdout is one (0 otherwise: no cut).
size_t TerminalWidth() {
  if (isatty(STDOUT_FILENO) != 1) return 0;
  struct winsize ws = {};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* columns = std::getenv("COLUMNS")) {
    const long n = std::strtol(columns, nullptr, 10);
    if (n > 0) return static_cast<size_t>(n);
  }
  return 80;
}

// `line` cut to `width` bytes (UTF-8 aware) with "…" at the end; unchanged when it fits or when
// width is 0.
std::string FitWidth(std::string line, size_t width) {
  if (width == 0 || line.size() <= width) return line;
  size_t cut = width > 1 ? width - 1 : 0;
  while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  line.resize(cut);
  return line + "\xE2\x80\xA6";  // U+2026 HORIZONTAL ELLIPSIS
}

}  // namespace

int TailCommand(const TailArgs& args) {
  if (std::optional<std::string> problem = ZmqEndpointProblem(args.endpoint)) {
    std::cerr << "tail: --endpoint: " << *problem
              << "; the engine's alert stream is its zmq_alerts sink (default "
                 "tcp://127.0.0.1:5557; `run --ready-file` lists every endpoint)\n";
    return 2;
  }
  const std::optional<int64_t> quiet_ms = ParseDurationMs(args.quiet_warning);
  if (!quiet_ms || *quiet_ms < 0) {
    std::cerr << "tail: --quiet-warning: expected a duration such as 60s (0: never), got '"
              << args.quiet_warning << "'\n";
    return 2;
  }
  std::string topic = args.topic;
  if (!args.severity.empty() || !args.instance.empty() || !args.model.empty()) {
    if (args.severity.empty() || (!args.model.empty() && args.instance.empty())) {
      std::cerr << "tail: --instance needs --severity, --model needs --instance (topics are "
                   "alerts.<severity>.<instance>.<model>.)\n";
      return 2;
    }
    if (!ParseSeverity(args.severity)) {
      std::cerr << "tail: unknown severity '" << args.severity
                << "' (info, warning, critical, emergency)\n";
      return 2;
    }
    topic = client::AlertTopicPrefix(args.severity, args.instance, args.model);
  }
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  try {
    zmq::context_t ctx(1);
    zmq::socket_t sub(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::linger, 0);
    sub.set(zmq::sockopt::subscribe, topic);
    if (!args.curve_key.empty() || !args.curve_server_key.empty()) {
      client::CurveClientKeys keys;
      std::string error;
      if (!client::LoadCurveClientKeys(args.curve_key, args.curve_server_key, &keys, &error) ||
          !client::ApplyCurveClientKeys(sub, keys, &error)) {
        spdlog::error("tail: --curve-key/--curve-server-key: {}", error);
        return 2;
      }
    }
    sub.connect(args.endpoint);
    std::cerr << "tail: subscribed to '" << topic << "' on " << args.endpoint
              << (args.json ? " (JSON lines)" : "")
              << "; alerts are printed as they change (Ctrl-C to stop)" << std::endl;
    const size_t width = args.wide || args.json ? 0 : TerminalWidth();
    using Clock = std::chrono::steady_clock;
    Clock::time_point last_heard = Clock::now();
    bool warned = false;
    std::unordered_map<std::string, uint64_t> last_seq;  // by topic
    while (!g_stop) {
      zmq::pollitem_t item = {sub.handle(), 0, ZMQ_POLLIN, 0};
      // A short poll so that Ctrl-C is noticed promptly (poll returns EINTR, cppzmq throws).
      int ready = 0;
      try {
        ready = zmq::poll(&item, 1, std::chrono::milliseconds(200));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        throw;
      }
      if (ready == 0) {
        const auto quiet = Clock::now() - last_heard;
        if (*quiet_ms > 0 && !warned && quiet >= std::chrono::milliseconds(*quiet_ms)) {
          std::cerr << "tail: nothing heard from " << args.endpoint << " on '" << topic << "' for "
                    << std::chrono::duration_cast<std::chrono::seconds>(quiet).count()
                    << " s; alerts are rare when all is well, but check that the engine is "
                       "running and that this is its zmq_alerts endpoint"
                    << std::endl;
          warned = true;  // once per quiet spell
        }
        continue;
      }
      last_heard = Clock::now();
      warned = false;
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(sub, std::back_inserter(frames), zmq::recv_flags::dontwait))
        continue;
      if (frames.size() != 2) continue;
      json alert;
      const std::string_view payload(frames[1].data<char>(), frames[1].size());
      if (!payload.empty() && (payload.front() == '{')) {
        alert = json::parse(payload, nullptr, false);
      } else {
        try {
          msgpack::object_handle oh = msgpack::unpack(payload.data(), payload.size());
          alert = ToJson(oh.get());
        } catch (const std::exception&) {
          alert = json();
        }
      }
      if (!alert.is_object()) {
        std::cerr << "tail: undecodable message on topic " << frames[0].to_string() << "\n";
        continue;
      }
      // Messages ZeroMQ dropped for this subscriber (past the engine's high-water mark) show as a
      // jump of the topic's topic_seq (docs/PROTOCOL.md, "Lost messages").
      if (const auto seq = alert.find("topic_seq");
          seq != alert.end() && seq->is_number_unsigned()) {
        const uint64_t n = seq->get<uint64_t>();
        if (last_seq.size() >= kMaxTopics) last_seq.clear();
        uint64_t& before = last_seq[frames[0].to_string()];
        if (before > 0 && n > before + 1) {
          std::cerr << "tail: " << n - before - 1 << " alert message(s) lost on topic "
                    << frames[0].to_string() << " (this subscriber fell behind the engine's sndhwm)"
                    << std::endl;
        }
        before = n;  // smaller: the engine restarted and numbers from 1 again
      }
      if (args.json) {
        std::cout << ToJsonText(alert) << std::endl;
      } else {
        std::cout << FitWidth(FormatAlertLine(alert, args.wide), width) << std::endl;
      }
    }
  } catch (const zmq::error_t& e) {
    if (g_stop) return 0;
    spdlog::error("tail: {} on {}", e.what(), args.endpoint);
    return 1;
  }
  return 0;
}

}  // namespace inferscope
