// KeyManager's stored grants (key_manager.h, "Grants at run time"; docs/key-manager.md, "Key DB
// layout"): rows of the meta family under "grant/" ‖ id (u64 BE), the id counter and the grants
// format beside them. What a grant means is kms/ops/runtime_grants.h's business; here they are
// only authenticated rows.

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "kms/keys/key_manager.h"

namespace coffer::kms {
namespace {

// The grants format this build writes and reads (v1::GrantsFormatRow).
constexpr uint32_t kGrantsFormat = 1;
constexpr std::string_view kGrantsFormatKey = "grants_format";
constexpr std::string_view kGrantCounterKey = "grant_next_id";
constexpr std::string_view kGrantPrefix = "grant/";

std::string GrantRowKey(uint64_t id) {
  std::string key(kGrantPrefix);
  for (int shift = 56; shift >= 0; shift -= 8)
    key.push_back(static_cast<char>((id >> shift) & 0xff));
  return key;
}

absl::StatusOr<std::vector<v1::GrantRow>> ScanGrants(KeyDb& db) {
  std::vector<v1::GrantRow> rows;
  COFFER_RETURN_IF_ERROR(db.Scan(
      KeyDbTable::kMeta, kGrantPrefix,
      [&rows](std::string_view key, std::string_view message) -> absl::Status {
        v1::GrantRow row;
        if (!row.ParseFromArray(message.data(), static_cast<int>(message.size())) ||
            key != GrantRowKey(row.id())) {
          return MakeError(ErrorCode::kKeyDbRowCorrupt,
                           "key DB inconsistent: a grant row does not parse or sits under another "
                           "id");
        }
        rows.push_back(std::move(row));
        return absl::OkStatus();
      }));
  return rows;
}

// Same principal, dataset and rights (the rights as a set).
bool SameGrant(const v1::GrantRow& a, const v1::GrantRow& b) {
  if (a.principal_case() != b.principal_case() || a.uid() != b.uid() || a.user() != b.user() ||
      a.gid() != b.gid() || a.group() != b.group() || a.every_dataset() != b.every_dataset() ||
      a.dataset_handle() != b.dataset_handle()) {
    return false;
  }
  std::vector<uint32_t> left(a.rights().begin(), a.rights().end());
  std::vector<uint32_t> right(b.rights().begin(), b.rights().end());
  std::sort(left.begin(), left.end());
  std::sort(right.begin(), right.end());
  left.erase(std::unique(left.begin(), left.end()), left.end());
  right.erase(std::unique(right.begin(), right.end()), right.end());
  return left == right;
}

}  // namespace

absl::Status KeyManager::OpenGrants() {
  v1::GrantsFormatRow format;
  COFFER_ASSIGN_OR_RETURN(bool has_format, db_->Get(KeyDbTable::kMeta, kGrantsFormatKey, format));
  if (has_format && format.format() != kGrantsFormat) {
    return MakeError(ErrorCode::kUnsupportedFormat,
                     "key DB grants format " + std::to_string(format.format()) +
                         " is not one this build reads (1): its run-time grants could be "
                         "misread or ignored");
  }
  // Every grant row authenticates (and parses) before anything is served.
  COFFER_RETURN_IF_ERROR(ScanGrants(*db_).status());
  if (has_format) return absl::OkStatus();
  KeyDb::Batch batch(*db_);
  format.set_format(kGrantsFormat);
  COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kMeta, kGrantsFormatKey, format));
  return db_->Write(batch);
}

absl::StatusOr<std::vector<v1::GrantRow>> KeyManager::StoredGrants() const {
  return ScanGrants(*db_);
}

absl::StatusOr<v1::GrantRow> KeyManager::AddGrant(v1::GrantRow row) {
  std::lock_guard<std::mutex> lock(grants_mu_);
  COFFER_ASSIGN_OR_RETURN(std::vector<v1::GrantRow> existing, ScanGrants(*db_));
  for (const v1::GrantRow& other : existing) {
    if (SameGrant(other, row)) {
      return MakeError(ErrorCode::kAlreadyExists,
                       "stored grant " + std::to_string(other.id()) +
                           " already gives these rights on this dataset to this principal");
    }
  }
  v1::GrantCounterRow counter;
  COFFER_ASSIGN_OR_RETURN(bool has_counter, db_->Get(KeyDbTable::kMeta, kGrantCounterKey, counter));
  uint64_t id = has_counter ? counter.next_id() : 1;
  // Never below an id in use, whatever the counter says.
  for (const v1::GrantRow& other : existing) id = std::max(id, other.id() + 1);
  if (id == 0 || id == UINT64_MAX) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt, "key DB grant ids are exhausted");
  }
  row.set_id(id);
  row.set_created_micros(NowMicros());
  counter.set_next_id(id + 1);
  KeyDb::Batch batch(*db_);
  COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kMeta, GrantRowKey(id), row));
  COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kMeta, kGrantCounterKey, counter));
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  return row;
}

absl::StatusOr<v1::GrantRow> KeyManager::RemoveGrant(uint64_t id) {
  std::lock_guard<std::mutex> lock(grants_mu_);
  v1::GrantRow row;
  COFFER_ASSIGN_OR_RETURN(bool found, db_->Get(KeyDbTable::kMeta, GrantRowKey(id), row));
  if (!found) {
    return MakeError(ErrorCode::kNotFound,
                     "no stored grant with that id (keyctl grant list shows them)");
  }
  if (row.id() != id) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt,
                     "key DB inconsistent: a grant row sits under another id");
  }
  KeyDb::Batch batch(*db_);
  batch.Delete(KeyDbTable::kMeta, GrantRowKey(id));
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  return row;
}

}  // namespace coffer::kms
