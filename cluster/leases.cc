#include "cluster/leases.h"

#include <nats/nats.h>

#include <algorithm>
#include <memory>

#include <nlohmann/json.hpp>

namespace inferscope {
namespace {

Status NatsError(std::string_view what, natsStatus s, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string message = std::string(what) + ": " + natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') message += std::string(" (") + last + ")";
  if (jerr != 0) message += " [JetStream error " + std::to_string(static_cast<int>(jerr)) + "]";
  return Status::Unavailable(message);
}

}  // namespace

Result<std::unique_ptr<LeaseTable>> LeaseTable::Open(jsCtx* js, const std::string& bucket,
                                                     int replicas) {
  kvStore* kv = nullptr;
  natsStatus s = js_KeyValue(&kv, js, bucket.c_str());
  if (s != NATS_OK) {
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = bucket.c_str();
    cfg.History = 1;
    cfg.StorageType = js_FileStorage;
    cfg.Replicas = replicas;
    s = js_CreateKeyValue(&kv, js, &cfg);
    // Another node created it meanwhile.
    if (s != NATS_OK) s = js_KeyValue(&kv, js, bucket.c_str());
  }
  if (s != NATS_OK) return NatsError("leases: bucket " + bucket, s);
  return std::unique_ptr<LeaseTable>(new LeaseTable(js, kv, bucket));
}

LeaseTable::~LeaseTable() {
  if (kv_ != nullptr) kvStore_Destroy(kv_);
}

Result<Lease> LeaseTable::Get(std::string_view slot) {
  const std::string key = Key(slot);
  const std::string stream = "KV_" + bucket_;
  const std::string subject = "$KV." + bucket_ + "." + key;
  natsMsg* msg = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetLastMsg(&msg, js_, stream.c_str(), subject.c_str(), nullptr, &jerr);
  Lease lease;
  if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) return lease;
  if (s != NATS_OK) return NatsError("leases: reading " + key, s, jerr);
  lease.revision = natsMsg_GetSequence(msg);
  // A delete or purge marker (KV-Operation header) has no value: a released lease.
  const char* op = nullptr;
  const bool removed = natsMsgHeader_Get(msg, "KV-Operation", &op) == NATS_OK && op != nullptr;
  if (!removed) {
    nlohmann::json j = nlohmann::json::parse(
        std::string_view(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg))),
        nullptr, false);
    if (j.is_object()) {
      lease.owner = j.value("owner", std::string());
      lease.ttl_ms = j.value("ttl_ms", int64_t{0});
    }
  }
  natsMsg_Destroy(msg);
  return lease;
}

Result<uint64_t> LeaseTable::Write(std::string_view slot, std::string_view owner, int64_t ttl_ms,
                                   uint64_t revision) {
  const std::string key = Key(slot);
  const std::string value = nlohmann::json{{"owner", owner}, {"ttl_ms", ttl_ms}}.dump();
  uint64_t rev = 0;
  natsStatus s = revision == 0 ? kvStore_Create(&rev, kv_, key.c_str(), value.data(),
                                                static_cast<int>(value.size()))
                               : kvStore_Update(&rev, kv_, key.c_str(), value.data(),
                                                static_cast<int>(value.size()), revision);
  if (s == NATS_OK) return rev;
  // The server refuses an Update from a stale revision (JetStream error 10071, "wrong last
  // sequence") and libnats a Create of an existing key ("key exists"): the CAS lost. Anything else
  // (a timeout, no responders during a leader election, a lost connection) is Unavailable.
  const char* last = nats_GetLastError(nullptr);
  const std::string text = last != nullptr ? last : "";
  if (s == NATS_ERR && (text.find("wrong last sequence") != std::string::npos ||
                        text.find("key exists") != std::string::npos)) {
    return Status::FailedPrecondition("leases: " + key + " changed since revision " +
                                      std::to_string(revision));
  }
  return NatsError("leases: writing " + key, s);
}

bool LeaseClock::Expired(std::string_view slot, const Lease& lease, int64_t now_ms, int64_t ttl_ms,
                         bool absent_is_free) {
  if (lease.revision != 0 && lease.owner.empty()) return true;  // released
  if (lease.revision == 0 && absent_is_free) return true;
  auto it = seen_.find(slot);
  if (it == seen_.end() || it->second.revision != lease.revision) {
    seen_[std::string(slot)] = Seen{lease.revision, now_ms};
    return false;
  }
  const int64_t ttl = std::max(lease.ttl_ms, ttl_ms);
  return now_ms - it->second.since_ms > ttl;
}

}  // namespace inferscope
