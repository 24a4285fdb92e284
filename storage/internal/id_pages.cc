#include "storage/internal/id_pages.h"

#include <utility>

#include "crypto/base/status.h"
#include "storage/internal/envelope.h"

namespace coffer::storage::internal {

absl::StatusOr<IdPage> ListIdPage(DataDb* db, KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                  uint64_t handle, std::string_view page_token, size_t max_items) {
  if (max_items == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "the page size must be at least 1");
  }
  if (!page_token.empty() && page_token.size() != kMacSize) {
    return MakeError(ErrorCode::kInvalidArgument, "malformed page token");
  }
  // Fails for an unknown, destroyed or locked dataset before anything is read.
  COFFER_RETURN_IF_ERROR(keys->PrimaryKey(handle, KeyPurpose::kLookup, 0).status());
  std::string start = DatasetBegin(handle);
  start.append(page_token);
  std::string end = DatasetEnd(handle);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  ScopedIterator it = db->NewIterator(cf, read_options);
  IdPage page;
  std::string last_key;
  for (it->Seek(start); it->Valid(); it->Next()) {
    std::string_view key(it->key().data(), it->key().size());
    if (!page_token.empty() && key == start) continue;
    if (page.ids.size() == max_items) {  // more remain: resume after the last one returned
      page.next_page_token = std::string(MacOf(last_key));
      break;
    }
    std::string_view value(it->value().data(), it->value().size());
    absl::StatusOr<OpenedEntry> opened = OpenEntry(keys, cf, purpose, key, value);
    last_key.assign(key);
    if (!opened.ok()) {
      if (!IsItemDamage(opened.status())) return opened.status();
      page.damaged.Add(CfName(cf), key, opened.status());
      continue;
    }
    page.ids.push_back(std::move(opened->id));
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
  return page;
}

}  // namespace coffer::storage::internal
