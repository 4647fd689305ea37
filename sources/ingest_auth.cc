#include "sources/ingest_auth.h"

namespace inferscope {

IngestAuth::IngestAuth(CurveServerOptions options, const std::string& stage,
                       MetricsRegistry* metrics)
    : server_(std::move(options), "source " + stage, metrics,
              "inferscope_source_auth_failures_total", {{"stage", stage}}),
      stage_(stage),
      metrics_(metrics != nullptr ? metrics : &own_metrics_) {}

IngestAuth::~IngestAuth() { Stop(); }

PublisherAuthorizer* IngestAuth::Authorize(const zmq::message_t& message) {
  // zmq_msg_gets, not message_t::gets: that one throws when the property is absent.
  const char* user_id = zmq_msg_gets(message.handle(), "User-Id");
  sender_ = user_id == nullptr ? nullptr : server_.authorized_keys().Find(user_id);
  return this;
}

std::string_view IngestAuth::sender_key() const {
  return sender_ == nullptr ? std::string_view() : std::string_view(sender_->public_key);
}

bool IngestAuth::MayPublishAs(std::string_view publisher) const {
  if (sender_ != nullptr && sender_->MayPublishAs(publisher)) return true;
  ClaimedCounter(publisher)->Inc();
  return false;
}

Counter* IngestAuth::ClaimedCounter(std::string_view publisher) const {
  auto it = claimed_.find(publisher);
  if (it != claimed_.end()) return it->second;
  static constexpr char kHelp[] =
      "Messages refused because the sender's CurveZMQ key may not use the publisher id they claim";
  if (claimed_.size() >= kMaxClaimedLabels) {
    if (claimed_other_ == nullptr) {
      claimed_other_ = metrics_->GetCounter("inferscope_source_unauthorized_total", kHelp,
                                            {{"stage", stage_}, {"publisher", "_other"}});
    }
    return claimed_other_;
  }
  // The id is the attacker's choice: keep the label printable ASCII.
  std::string label(publisher);
  for (char& c : label) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  Counter* counter = metrics_->GetCounter("inferscope_source_unauthorized_total", kHelp,
                                          {{"stage", stage_}, {"publisher", label}});
  claimed_.emplace(std::string(publisher), counter);
  return counter;
}

}  // namespace inferscope
