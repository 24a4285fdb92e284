#include "storage/rocks_status.h"

#include <string>

namespace coffer::storage {

absl::Status FromRocks(const rocksdb::Status& status, ErrorCode code, std::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return MakeError(code, std::string(what) + " failed: " + status.ToString());
}

}  // namespace coffer::storage
