#include "storage/internal/metered_file_system.h"

#include <utility>

namespace coffer::storage::internal {

namespace {

using Direction = MeteredFileSystem::Direction;

class MeteredSequentialFile : public rocksdb::FSSequentialFileOwnerWrapper {
 public:
  MeteredSequentialFile(std::unique_ptr<rocksdb::FSSequentialFile> file, MeteredFileSystem* fs)
      : FSSequentialFileOwnerWrapper(std::move(file)), fs_(fs) {}

  rocksdb::IOStatus Read(size_t n, const rocksdb::IOOptions& options, rocksdb::Slice* result,
                         char* scratch, rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus status = target()->Read(n, options, result, scratch, dbg);
    if (status.ok()) fs_->Count(Direction::kReads, result->size());
    return status;
  }
  rocksdb::IOStatus PositionedRead(uint64_t offset, size_t n, const rocksdb::IOOptions& options,
                                   rocksdb::Slice* result, char* scratch,
                                   rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus status = target()->PositionedRead(offset, n, options, result, scratch, dbg);
    if (status.ok()) fs_->Count(Direction::kReads, result->size());
    return status;
  }

 private:
  MeteredFileSystem* fs_;
};

class MeteredWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  MeteredWritableFile(std::unique_ptr<rocksdb::FSWritableFile> file, MeteredFileSystem* fs)
      : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    return Counted(target()->Append(data, options, dbg), data.size());
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    return Counted(target()->Append(data, options, info, dbg), data.size());
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     rocksdb::IODebugContext* dbg) override {
    return Counted(target()->PositionedAppend(data, offset, options, dbg), data.size());
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     const rocksdb::DataVerificationInfo& info,
                                     rocksdb::IODebugContext* dbg) override {
    return Counted(target()->PositionedAppend(data, offset, options, info, dbg), data.size());
  }

 private:
  rocksdb::IOStatus Counted(rocksdb::IOStatus status, uint64_t bytes) {
    if (status.ok()) fs_->Count(Direction::kWrites, bytes);
    return status;
  }

  MeteredFileSystem* fs_;
};

}  // namespace

MeteredFileSystem::MeteredFileSystem(const std::shared_ptr<rocksdb::FileSystem>& target)
    : FileSystemWrapper(target) {}

void MeteredFileSystem::Attach(Direction direction, Meter meter) {
  std::lock_guard<std::mutex> lock(mu_);
  direction_ = direction;
  meter_ = std::move(meter);
}

void MeteredFileSystem::Detach() {
  Meter detached;
  {
    std::lock_guard<std::mutex> lock(mu_);
    detached = std::move(meter_);
    meter_ = nullptr;
  }
}

void MeteredFileSystem::Count(Direction direction, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (meter_ && direction == direction_ && bytes > 0) meter_(bytes);
}

rocksdb::IOStatus MeteredFileSystem::NewSequentialFile(
    const std::string& name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSSequentialFile>* result, rocksdb::IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSSequentialFile> file;
  rocksdb::IOStatus status = target()->NewSequentialFile(name, options, &file, dbg);
  if (status.ok()) *result = std::make_unique<MeteredSequentialFile>(std::move(file), this);
  return status;
}

rocksdb::IOStatus MeteredFileSystem::NewWritableFile(
    const std::string& name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result, rocksdb::IODebugContext* dbg) {
  std::unique_ptr<rocksdb::FSWritableFile> file;
  rocksdb::IOStatus status = target()->NewWritableFile(name, options, &file, dbg);
  if (status.ok()) *result = std::make_unique<MeteredWritableFile>(std::move(file), this);
  return status;
}

ScopedMeter::ScopedMeter(MeteredFileSystem* fs, MeteredFileSystem::Direction direction,
                         MeteredFileSystem::Meter meter)
    : fs_(fs) {
  fs_->Attach(direction, std::move(meter));
}

void ScopedMeter::Detach() {
  if (fs_ != nullptr) fs_->Detach();
  fs_ = nullptr;
}

}  // namespace coffer::storage::internal
