#include "state/checkpoint_store.h"

#include "state/state_store.h"

namespace inferscope {

const RecordTable kCheckpointTable("checkpoint");

Status WriteCheckpointRecords(StateStore& store, std::span<const CheckpointRecord> records,
                              bool sync) {
  return store.WriteRecords(kCheckpointTable, records, sync);
}

StateCheckpointReader::StateCheckpointReader(std::string_view kind, std::string_view stage,
                                             const StateStore* store)
    : prefix_(CheckpointPrefix(kind, stage)), store_(store) {}

Status StateCheckpointReader::ForEach(
    const std::function<Status(std::string_view, std::string_view)>& fn) const {
  if (store_ == nullptr) return Status::Ok();
  // The prefix ends with the stage name; the first key after the range is the prefix with its
  // last byte incremented (stage names are printable, so no carry is needed).
  std::string end = prefix_;
  end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
  Status result = Status::Ok();
  Status scan = store_->ScanRecords(kCheckpointTable, prefix_, end,
                                    [&](std::string_view key, std::string_view value) {
                                      result = fn(key.substr(prefix_.size()), value);
                                      return result.ok();
                                    });
  INFERSCOPE_RETURN_IF_ERROR(scan);
  return result;
}

std::unique_ptr<CheckpointReader> StateCheckpointStorage::Reader(std::string_view kind,
                                                                 std::string_view stage) const {
  return std::make_unique<StateCheckpointReader>(kind, stage, store_);
}

}  // namespace inferscope
