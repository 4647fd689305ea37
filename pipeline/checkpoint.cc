#include "pipeline/checkpoint.h"

namespace inferscope {

std::string CheckpointPrefix(std::string_view kind, std::string_view stage) {
  std::string prefix;
  AppendStr(&prefix, kind);
  AppendStr(&prefix, stage);
  return prefix;
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
