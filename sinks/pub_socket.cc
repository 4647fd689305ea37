#include "sinks/pub_socket.h"

namespace inferscope {

void PubSocket::RequireKeys(CurveServerOptions curve, MetricsRegistry* metrics,
                            const std::string& stage) {
  curve_ = std::move(curve);
  metrics_ = metrics;
  stage_ = stage;
}

Status PubSocket::Bind(const std::string& endpoint, int sndhwm, std::string_view what) {
  what_ = what;
  try {
    context_ = std::make_unique<zmq::context_t>(1);
    socket_ = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::pub);
    if (curve_.enabled()) {
      curve_server_ = std::make_unique<CurveServer>(curve_, what_ + " " + stage_, metrics_,
                                                    "inferscope_sink_auth_failures_total",
                                                    Labels{{"stage", stage_}});
      Status started = curve_server_->Start(*context_);
      if (!started.ok()) {
        Close();
        return started;
      }
      curve_server_->Configure(*socket_);
    }
    socket_->set(zmq::sockopt::sndhwm, sndhwm);
    socket_->set(zmq::sockopt::linger, kLingerMs);
    socket_->bind(endpoint);
    endpoint_ = socket_->get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    Close();
    return Status::IOError(what_ + ": binding '" + endpoint + "': " + e.what());
  }
  return Status::Ok();
}

Status PubSocket::Send(zmq::const_buffer topic, zmq::const_buffer payload) {
  try {
    socket_->send(topic, zmq::send_flags::sndmore);
    socket_->send(payload, zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    return Status::IOError(what_ + ": send: " + e.what());
  }
  return Status::Ok();
}

void PubSocket::Close() {
  // Closing cannot fail in a way the caller could act on; cppzmq's close and the context's
  // destructor do not throw.
  socket_.reset();
  curve_server_.reset();  // stops the ZAP handler, whose sockets must close before the context
  context_.reset();
}

}  // namespace inferscope
