// FromRocks: the one conversion of a rocksdb::Status into an absl::Status, shared by every
// RocksDB in coffer (the data DB, the key DB, the admin registry, the event log), so that they
// all report RocksDB failures the same way.
//
// OK stays OK. Any failure becomes `code` (each DB keeps its documented code: DATA_DB_ERROR for
// the data DB and the event log, IO_ERROR for the key DB and the admin registry) with the
// message "<what> failed: <RocksDB's status text>". `what` names the DB and the operation
// ("key DB read"); RocksDB's text names its own error and file, and callers never pass row
// contents in `what`.
//
// Thread safety: a pure function. Failures: none of its own.

#ifndef COFFER_STORAGE_ROCKS_STATUS_H_
#define COFFER_STORAGE_ROCKS_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "crypto/base/status.h"
#include "rocksdb/status.h"

namespace coffer::storage {

absl::Status FromRocks(const rocksdb::Status& status, ErrorCode code, std::string_view what);

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_ROCKS_STATUS_H_
