#include "state/silence_store.h"

namespace inferscope {

const RecordTable kSilencesTable("silences");

}  // namespace inferscope
