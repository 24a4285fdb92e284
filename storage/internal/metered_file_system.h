// MeteredFileSystem: a rocksdb::FileSystem that forwards every call to its target and, while a
// meter is attached, passes it the size of every sequential read or of every write — the way
// DataDbBackups measures the progress of BackupEngine's operations, which RocksDB 7.8 does not
// report itself (CreateBackupOptions::progress_callback ticks at most once per 5 MiB copy
// buffer and not at all for smaller files; VerifyBackup and RestoreDBFromBackup have no
// callback). It is the backup directory's file system: a backup's Create writes every file it
// copies there, and Verify and RestoreInto read each file of a backup once, sequentially.
//
// Thread safety: any thread may read or write; meter calls are serialized under a lock, so the
// meter never runs concurrently with itself, and Detach returns only once no call is running
// (the meter is never called after it). Ownership: the meter is owned until Detach.

#ifndef COFFER_STORAGE_INTERNAL_METERED_FILE_SYSTEM_H_
#define COFFER_STORAGE_INTERNAL_METERED_FILE_SYSTEM_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "rocksdb/file_system.h"

namespace coffer::storage::internal {

class MeteredFileSystem : public rocksdb::FileSystemWrapper {
 public:
  enum class Direction { kReads, kWrites };
  using Meter = std::function<void(uint64_t bytes)>;

  explicit MeteredFileSystem(const std::shared_ptr<rocksdb::FileSystem>& target);

  static const char* kClassName() { return "CofferMeteredFileSystem"; }
  const char* Name() const override { return kClassName(); }

  // Calls `meter` with the bytes of each sequential read (kReads) or each write (kWrites) from
  // now until Detach, replacing any meter attached before.
  void Attach(Direction direction, Meter meter);
  void Detach();

  // Called by the file wrappers.
  void Count(Direction direction, uint64_t bytes);

  rocksdb::IOStatus NewSequentialFile(const std::string& name, const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSSequentialFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;

 private:
  std::mutex mu_;
  Direction direction_ = Direction::kReads;  // guarded by mu_
  Meter meter_;                              // guarded by mu_
};

// Attaches a meter for the lifetime of a scope; Detach() ends it early.
class ScopedMeter {
 public:
  ScopedMeter(MeteredFileSystem* fs, MeteredFileSystem::Direction direction,
              MeteredFileSystem::Meter meter);
  ScopedMeter(const ScopedMeter&) = delete;
  ScopedMeter& operator=(const ScopedMeter&) = delete;
  ~ScopedMeter() { Detach(); }
  void Detach();

 private:
  MeteredFileSystem* fs_;
};

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_METERED_FILE_SYSTEM_H_
