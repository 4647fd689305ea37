#include "clients/cpp/acked_publisher.h"

#include <msgpack.hpp>

#include <algorithm>
#include <utility>

namespace inferscope::client {
namespace {

using Clock = std::chrono::steady_clock;
// At most one go-back resend per this interval (the engine's hints come in bursts).
constexpr int kGoBackIntervalMs = 100;

// Reads an unsigned field of an ack map; false when absent or nil.
bool GetUint(const msgpack::object& map, std::string_view key, uint64_t* out) {
  for (const auto& kv : map.via.map) {
    if (kv.key.type != msgpack::type::STR || kv.key.as<std::string_view>() != key) continue;
    if (kv.val.type != msgpack::type::POSITIVE_INTEGER) return false;
    *out = kv.val.via.u64;
    return true;
  }
  return false;
}

}  // namespace

AckedPublisher::AckedPublisher(AckedPublisherOptions options)
    : options_(std::move(options)), encoder_(options_.publisher_id) {}

AckedPublisher::~AckedPublisher() { Close(); }

bool AckedPublisher::Connect(std::string* error) {
  auto fail = [&](std::string message) {
    last_error_ = std::move(message);
    if (error != nullptr) *error = last_error_;
    socket_.reset();
    context_.reset();
    return false;
  };
  if (options_.endpoint.empty()) return fail("endpoint is required");
  if (options_.publisher_id.empty() || options_.publisher_id.size() > 255) {
    return fail("publisher_id must be 1..255 bytes");
  }
  if (options_.batch_size == 0 || options_.max_unacked == 0) {
    return fail("batch_size and max_unacked must be >= 1");
  }
  try {
    context_ = std::make_unique<zmq::context_t>(1);
    socket_ = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::dealer);
    socket_->set(zmq::sockopt::sndhwm, options_.sndhwm);
    socket_->set(zmq::sockopt::linger, options_.linger_ms);
    std::string curve_error;
    if (options_.curve.enabled() && !ApplyCurveClientKeys(*socket_, options_.curve, &curve_error)) {
      return fail(curve_error);
    }
    socket_->connect(options_.endpoint);
    msgpack::sbuffer hello;
    msgpack::packer<msgpack::sbuffer> pk(hello);
    pk.pack_map(2);
    pk.pack("v");
    pk.pack(1);
    pk.pack("pub");
    pk.pack(options_.publisher_id);
    socket_->send(zmq::str_buffer("hello"), zmq::send_flags::sndmore);
    socket_->send(zmq::buffer(hello.data(), hello.size()), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    return fail("connect " + options_.endpoint + ": " + e.what());
  }
  last_progress_ = Clock::now();
  const auto deadline = Clock::now() + std::chrono::milliseconds(options_.hello_timeout_ms);
  while (!hello_answered_ && Clock::now() < deadline) Poll(10);
  return true;
}

void AckedPublisher::Send(const Message& m) {
  try {
    // DEALER queues while disconnected; a full queue (sndhwm) drops the send here, and the resend
    // timer brings the message back.
    if (socket_->send(zmq::buffer(options_.topic),
                      zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      (void)socket_->send(zmq::buffer(m.payload), zmq::send_flags::dontwait);
      ++messages_sent_;
    }
  } catch (const zmq::error_t& e) {
    last_error_ = std::string("send: ") + e.what();
  }
}

void AckedPublisher::HandleAck(const zmq::message_t& payload) {
  try {
    msgpack::object_handle handle =
        msgpack::unpack(static_cast<const char*>(payload.data()), payload.size());
    const msgpack::object& root = handle.get();
    if (root.type != msgpack::type::MAP) return;
    uint64_t ack = 0;
    uint64_t next = 0;
    const bool has_ack = GetUint(root, "ack", &ack);
    const bool has_next = GetUint(root, "next", &next);
    if (!hello_answered_) {
      hello_answered_ = true;
      // A fresh publisher (nothing buffered, nothing sent) resumes where the engine expects.
      if (unacked_.empty() && encoder_.size() == 0 && has_next) {
        encoder_.set_next_seq(std::max(next, encoder_.next_seq()));
      }
    }
    if (has_ack && (!any_acked_ || ack > acked_seq_)) {
      acked_seq_ = ack;
      any_acked_ = true;
      last_progress_ = Clock::now();
    }
    while (any_acked_ && !unacked_.empty() && unacked_.front().seq <= acked_seq_) {
      unacked_.pop_front();
    }
    // The engine expects an older message than some we sent (they were lost in a reconnect or
    // an engine restart): go back to it now rather than at the resend timeout.
    if (has_next && !unacked_.empty() && next >= unacked_.front().seq &&
        next <= unacked_.back().seq &&
        Clock::now() - last_go_back_ > std::chrono::milliseconds(kGoBackIntervalMs)) {
      last_go_back_ = Clock::now();
      for (const Message& m : unacked_) {
        if (m.seq < next) continue;
        Send(m);
        ++resends_;
      }
      last_progress_ = Clock::now();
    }
  } catch (const std::exception&) {
    // Not an ack we understand; ignore it.
  }
}

void AckedPublisher::ResendAll() {
  for (const Message& m : unacked_) Send(m);
  resends_ += unacked_.size();
  last_progress_ = Clock::now();
}

void AckedPublisher::Poll(int timeout_ms) {
  if (socket_ == nullptr) return;
  try {
    zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLIN, 0};
    int wait = timeout_ms;
    while (zmq::poll(&item, 1, std::chrono::milliseconds(wait)) > 0) {
      zmq::message_t topic;
      zmq::message_t payload;
      if (!socket_->recv(topic, zmq::recv_flags::dontwait)) break;
      if (topic.more() && socket_->recv(payload, zmq::recv_flags::dontwait)) HandleAck(payload);
      wait = 0;  // drain what is there, then return
    }
  } catch (const zmq::error_t& e) {
    last_error_ = std::string("receive: ") + e.what();
  }
  if (!unacked_.empty() &&
      Clock::now() - last_progress_ > std::chrono::milliseconds(options_.resend_timeout_ms)) {
    ResendAll();
  }
}

bool AckedPublisher::Flush() {
  if (encoder_.size() == 0) {
    Poll(0);
    return true;
  }
  if (socket_ == nullptr) {
    last_error_ = "not connected";
    return false;
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(options_.block_timeout_ms);
  Poll(0);
  while (unacked_.size() >= options_.max_unacked) {
    if (options_.block_timeout_ms >= 0 && Clock::now() >= deadline) {
      last_error_ =
          "back-pressure: " + std::to_string(unacked_.size()) + " messages await acknowledgement";
      return false;
    }
    Poll(10);
  }
  if (unacked_.empty()) last_progress_ = Clock::now();
  Message& m = unacked_.emplace_back();
  m.seq = encoder_.next_seq();
  m.payload.assign(encoder_.Finish());
  Send(m);
  return true;
}

bool AckedPublisher::Request(const RequestOutcome& r) {
  encoder_.AddRequest(r);
  return encoder_.size() < options_.batch_size || Flush();
}

bool AckedPublisher::Gauge(std::string_view instance, std::string_view model, std::string_view name,
                           double value, int64_t time_ms) {
  encoder_.AddGauge(instance, model, name, value, time_ms);
  return encoder_.size() < options_.batch_size || Flush();
}

bool AckedPublisher::WaitAcked(int timeout_ms) {
  if (!Flush()) return false;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!unacked_.empty()) {
    if (Clock::now() >= deadline) {
      last_error_ = std::to_string(unacked_.size()) + " messages not acknowledged in time";
      return false;
    }
    Poll(10);
  }
  return true;
}

void AckedPublisher::Close() {
  if (socket_ != nullptr) {
    socket_->close();
    socket_.reset();
  }
  if (context_ != nullptr) {
    context_->close();
    context_.reset();
  }
}

}  // namespace inferscope::client
