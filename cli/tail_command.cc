// `inferscope tail`: subscribe to the alert stream and print one line per alert.

#include <signal.h>
#include <time.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include <spdlog/spdlog.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "alerting/alert.h"
#include "cli/commands.h"
#include "clients/cpp/curve.h"
#include "clients/cpp/topics.h"
#include "pipeline/json_text.h"

namespace inferscope {
namespace {

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

// One line for a person at a terminal: local time of detection, severity, state, series, the
// statistic and its value against the limit (rules) or the expected value, range and score
// (detectors), then type, rule, fingerprint and the message.
std::string FormatAlertLine(const json& a) {
  const int64_t detected = a.value("detected_at", int64_t{0});
  std::string state = Str(a, "state");
  for (char& c : state) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::string line = LocalTime(detected) + "  " + Str(a, "severity") + "  " + state + "  " +
                     Str(a, "instance") + "/" + Str(a, "model") + "  " + Str(a, "metric") + ":" +
                     Str(a, "stat") + " = " + Num(a, "value");
  const std::string type = Str(a, "type");
  if (type == "threshold") {
    line += " (limit " + Num(a, "expected") + ")";
  } else {
    line += " (expected " + Num(a, "expected") + ", range " + Num(a, "lower") + ".." +
            Num(a, "upper") + ", score " + Num(a, "score") + ")";
  }
  line += "  [" + type + ", " + Str(a, "rule") + ", " + Str(a, "fingerprint") + "]  " +
          Str(a, "message");
  return line;
}

}  // namespace

int TailCommand(const TailArgs& args) {
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
    spdlog::debug("tail: subscribed to '{}' on {}", topic, args.endpoint);
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
      if (ready == 0) continue;
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
      if (args.json) {
        std::cout << ToJsonText(alert) << std::endl;
      } else {
        std::cout << FormatAlertLine(alert) << std::endl;
      }
    }
  } catch (const zmq::error_t& e) {
    if (g_stop) return 0;
    spdlog::error("tail: {}", e.what());
    return 1;
  }
  return 0;
}

}  // namespace inferscope
