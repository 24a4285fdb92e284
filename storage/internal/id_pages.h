// One page of a dataset's live ids in a column family of records or attachment pointers: the
// scan behind RecordStore::ListIds and AttachmentStore::ListNames (same token, same order).
//
// An entry whose own bytes do not open (storage/damaged_item.h) is skipped and reported in the
// page's `damaged`; the page still holds up to `max_items` good ids.
//
// Thread safety: as DataDb reads. Failure: INVALID_ARGUMENT for max_items 0 or a page token that
// is not a 32-byte MAC; the key provider's error for a dataset that may not be read; any other
// failure to open an entry (an unavailable key store, ...).

#ifndef COFFER_STORAGE_INTERNAL_ID_PAGES_H_
#define COFFER_STORAGE_INTERNAL_ID_PAGES_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "storage/damaged_item.h"
#include "storage/data_db.h"
#include "storage/internal/layout.h"
#include "storage/key_provider.h"

namespace coffer::storage::internal {

struct IdPage {
  std::vector<std::string> ids;  // in stored-key order (HMAC order, not id order)
  std::string next_page_token;   // empty when this is the last page
  DamagedItems damaged;          // entries met on this page that do not open
};

// Up to `max_items` (>= 1) ids of `handle`'s live entries in `cf` (opened under `purpose`),
// after `page_token` (empty: the first page). The token is the last returned entry's MAC.
absl::StatusOr<IdPage> ListIdPage(DataDb* db, KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                  uint64_t handle, std::string_view page_token, size_t max_items);

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_ID_PAGES_H_
