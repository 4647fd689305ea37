#include "pipeline/checkpoint.h"

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

CheckpointWriter::CheckpointWriter(std::string_view kind, std::string_view stage,
                                   std::vector<RecordWrite>* out)
    : prefix_(CheckpointPrefix(kind, stage)), out_(out) {}

void CheckpointWriter::Put(std::string_view key, std::string value) {
  out_->push_back({StateTable::kCheckpoint, prefix_ + std::string(key), std::move(value)});
}

void CheckpointWriter::Delete(std::string_view key) {
  out_->push_back({StateTable::kCheckpoint, prefix_ + std::string(key), std::nullopt});
}

CheckpointReader::CheckpointReader(std::string_view kind, std::string_view stage,
                                   const StateStore* store)
    : prefix_(CheckpointPrefix(kind, stage)), store_(store) {}

Status CheckpointReader::ForEach(
    const std::function<Status(std::string_view, std::string_view)>& fn) const {
  if (store_ == nullptr) return Status::Ok();
  // The prefix ends with the stage name; the first key after the range is the prefix with its
  // last byte incremented (stage names are printable, so no carry is needed).
  std::string end = prefix_;
  end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
  Status result = Status::Ok();
  Status scan = store_->ScanRecords(StateTable::kCheckpoint, prefix_, end,
                                    [&](std::string_view key, std::string_view value) {
                                      result = fn(key.substr(prefix_.size()), value);
                                      return result.ok();
                                    });
  INFERSCOPE_RETURN_IF_ERROR(scan);
  return result;
}

}  // namespace inferscope
