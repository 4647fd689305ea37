#include "pipeline/checkpoint.h"

#include "pipeline/coding.h"

namespace inferscope {

std::string CheckpointPrefix(std::string_view kind, std::string_view stage) {
  std::string prefix;
  AppendStr(&prefix, kind);
  AppendStr(&prefix, stage);
  return prefix;
}

namespace {
constexpr char kAppliedSequenceV1 = 0x01;

uint64_t LoadBe64(std::string_view bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return v;
}
}  // namespace

std::string EncodeAppliedSequence(const AppliedSequence& applied) {
  std::string value(1, kAppliedSequenceV1);
  AppendBigEndian64(&value, applied.incarnation);
  AppendBigEndian64(&value, applied.seq);
  if (applied.has_prev) {
    AppendBigEndian64(&value, applied.prev_incarnation);
    AppendBigEndian64(&value, applied.prev_seq);
  }
  return value;
}

Result<AppliedSequence> DecodeAppliedSequence(std::string_view value) {
  AppliedSequence a;
  if (value.size() == 8) {  // before incarnations: the sequence number alone
    a.seq = LoadBe64(value);
    return a;
  }
  if ((value.size() != 17 && value.size() != 33) || value[0] != kAppliedSequenceV1) {
    return Status::Corruption("applied sequence record of " + std::to_string(value.size()) +
                              " bytes is not version 1");
  }
  a.incarnation = LoadBe64(value.substr(1));
  a.seq = LoadBe64(value.substr(9));
  if (value.size() == 33) {
    a.has_prev = true;
    a.prev_incarnation = LoadBe64(value.substr(17));
    a.prev_seq = LoadBe64(value.substr(25));
  }
  return a;
}

CheckpointCollector::CheckpointCollector(std::string_view kind, std::string_view stage,
                                         std::vector<CheckpointRecord>* out)
    : prefix_(CheckpointPrefix(kind, stage)), out_(out) {}

void CheckpointCollector::Put(std::string_view key, std::string value) {
  out_->push_back({prefix_ + std::string(key), std::move(value)});
}

void CheckpointCollector::Delete(std::string_view key) {
  out_->push_back({prefix_ + std::string(key), std::nullopt});
}

}  // namespace inferscope
