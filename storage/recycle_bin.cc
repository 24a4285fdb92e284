#include "storage/recycle_bin.h"

#include <algorithm>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "rocksdb/write_batch.h"
#include "storage/damaged_item.h"
#include "storage/internal/bin_moves.h"
#include "storage/internal/envelope.h"
#include "storage/internal/id_locks.h"
#include "storage/scrub.h"

namespace coffer::storage {

using internal::Cf;

namespace {

// Items are examined in batches so no iterator stays open while we write and purge (an open
// view would make our own PurgePhysically wait for itself).
constexpr size_t kSweepBatch = 1024;

struct Candidate {
  std::string key;
  std::string value;
};

// Journals one item for the length of a purge: WillPurge at Begin, PurgeWritten when it ends.
class JournalScope {
 public:
  // `other_refs`: the id's MACs under the dataset's other live lookup versions.
  JournalScope(PurgeJournal* journal, Cf kind, std::string_view stored_key,
               std::vector<crypto::HmacSha256Tag> other_refs = {})
      : journal_(journal) {
    item_.dataset_handle = internal::HandleOf(stored_key);
    item_.kind = kind == Cf::kRecords ? PurgedItemKind::kRecord : PurgedItemKind::kAttachment;
    std::string_view mac = internal::MacOf(stored_key);
    std::copy(mac.begin(), mac.end(), item_.ref.begin());
    item_.other_refs = std::move(other_refs);
  }
  JournalScope(const JournalScope&) = delete;
  JournalScope& operator=(const JournalScope&) = delete;
  ~JournalScope() {
    if (began_) journal_->PurgeWritten(item_);
  }

  absl::Status Begin() {
    if (journal_ == nullptr) return absl::OkStatus();
    COFFER_RETURN_IF_ERROR(journal_->WillPurge(item_));
    began_ = true;
    return absl::OkStatus();
  }

 private:
  PurgeJournal* journal_;
  PurgedItem item_;
  bool began_ = false;
};

// The MACs of the id stored (as `entry_bytes`, of `kind`) under `stored_key` under the dataset's
// other live lookup versions, for the purge journal; none while it has one lookup version. A
// sweep also purges entries of a dataset whose keys it may not use (DISABLED): then the entry
// cannot be opened, and only its own MAC is journaled — a backup holds it under that version
// unless a re-index moved it since, which needs the keys.
std::vector<crypto::HmacSha256Tag> OtherRefs(KeyProvider* keys, Cf kind,
                                             std::string_view stored_key,
                                             std::string_view entry_bytes) {
  const uint64_t handle = internal::HandleOf(stored_key);
  absl::StatusOr<std::vector<uint32_t>> live = keys->LiveVersions(handle, KeyPurpose::kLookup);
  if (!live.ok() || live->size() < 2) return {};
  absl::StatusOr<internal::OpenedEntry> opened = internal::OpenEntry(
      keys, kind, kind == Cf::kRecords ? KeyPurpose::kRecords : KeyPurpose::kAttachments,
      stored_key, entry_bytes);
  if (!opened.ok()) return {};
  std::vector<crypto::HmacSha256Tag> refs;
  for (uint32_t version : *live) {
    if (version == opened->lookup_version) continue;
    absl::StatusOr<std::shared_ptr<const DataKey>> lookup =
        keys->KeyForVersion(handle, KeyPurpose::kLookup, version);
    if (!lookup.ok()) continue;
    absl::StatusOr<std::string> other = internal::StoredKeyWith(**lookup, handle, opened->id);
    if (other.ok()) refs.push_back(internal::RefOf(*other));
  }
  std::fill(opened->id.begin(), opened->id.end(), '\0');
  std::fill(opened->body.begin(), opened->body.end(), '\0');
  return refs;
}

// The column family and RocksDB key of the item of dataset `handle` (a record, an attachment
// pointer or a bin entry) whose damaged-item reference is `ref`; an empty key when none. The
// reference hashes the key, so every item key of the dataset is hashed until one matches (an
// admin's rare repair can afford one pass over the dataset's keys).
absl::StatusOr<std::pair<Cf, std::string>> FindByDamagedRef(DataDb* db, uint64_t handle,
                                                            std::string_view ref) {
  for (Cf cf : {Cf::kRecords, Cf::kAttachmentPointers, Cf::kRecycleBin}) {
    const std::string end = internal::DatasetEnd(handle);
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &upper;
    ScopedIterator it = db->NewIterator(cf, read_options);
    for (it->Seek(internal::DatasetBegin(handle)); it->Valid(); it->Next()) {
      if (DamagedRef(internal::CfName(cf), it->key().ToStringView()) == ref) {
        return std::pair<Cf, std::string>{cf, it->key().ToString()};
      }
    }
    COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
  }
  return std::pair<Cf, std::string>{Cf::kRecords, std::string()};
}

// Adds to `batch` the deletion of `item` (of `cf`) wherever it is, live and in the bin, with an
// attachment's segments. `check`, when set, is called first with each entry found (a purge's
// compliance lock); its error stops the deletion.
absl::Status DeleteStoredItem(DataDb* db, Cf cf, const internal::StoredItem& item,
                              const std::function<absl::Status(std::string_view)>& check,
                              rocksdb::WriteBatch* batch) {
  if (item.live) {
    if (check) COFFER_RETURN_IF_ERROR(check(*item.live));
    if (cf == Cf::kAttachmentPointers) {
      COFFER_RETURN_IF_ERROR(internal::DeleteSegmentsOf(db, item.stored_key, *item.live, batch));
    }
    COFFER_RETURN_IF_ERROR(FromRocks(batch->Delete(db->cf(cf), item.stored_key), "batch"));
  }
  if (item.binned) {
    if (check || cf == Cf::kAttachmentPointers) {  // a record's bin value goes unread otherwise
      COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(*item.binned));
      if (check) COFFER_RETURN_IF_ERROR(check(bin.entry));
      if (cf == Cf::kAttachmentPointers) {
        COFFER_RETURN_IF_ERROR(internal::DeleteSegmentsOf(db, item.stored_key, bin.entry, batch));
      }
    }
    COFFER_RETURN_IF_ERROR(
        FromRocks(batch->Delete(db->cf(Cf::kRecycleBin), item.bin_key), "batch"));
  }
  return absl::OkStatus();
}

bool Elapsed(int64_t since_us, std::chrono::seconds period,
             std::chrono::system_clock::time_point now) {
  return FromUnixMicros(since_us) + period <= now;
}

}  // namespace

absl::StatusOr<bool> RecycleBin::PurgeIfUnchanged(Cf cf, std::string_view key,
                                                  std::string_view expected,
                                                  const DatasetPolicy& policy, Due due,
                                                  PurgeJournal* journal_for_this,
                                                  PurgeReport* report) {
  // Which item this is, and when it was written and deleted.
  Cf kind = cf;
  std::string stored_key(key);
  std::string_view entry_bytes = expected;
  int64_t deleted_at_us = 0;
  if (cf == Cf::kRecycleBin) {
    COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts parts, internal::ParseBinKey(key));
    kind = parts.cf;
    stored_key = std::move(parts.stored_key);
    COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(expected));
    entry_bytes = bin.entry;
    deleted_at_us = bin.deleted_at_us;
  }
  COFFER_ASSIGN_OR_RETURN(internal::Entry entry, internal::ParseEntry(kind, entry_bytes));
  auto now = clock_->Now();
  bool is_due = false;
  switch (due) {
    case Due::kBinExpired:
      is_due = Elapsed(deleted_at_us, policy.recycle_bin_period, now);
      break;
    case Due::kMaxAge:
      is_due = policy.max_age.has_value() && Elapsed(entry.written_at_us, *policy.max_age, now);
      break;
    case Due::kNow:
      is_due = true;
      break;
  }
  if (!is_due) return false;
  if (!internal::CheckComplianceLock(policy, entry.written_at_us, now).ok()) {
    ++report->compliance_locked;
    return false;
  }

  // Before the stripe: it may need keys (and so an HSM unwrap).
  std::vector<crypto::HmacSha256Tag> other_refs;
  if (journal_for_this != nullptr) other_refs = OtherRefs(keys_, kind, stored_key, entry_bytes);

  std::lock_guard<std::mutex> lock(db_->StripeFor(internal::MacOf(stored_key)));
  std::string current;
  bool found = false;
  COFFER_RETURN_IF_ERROR(db_->Get(cf, key, &current, &found));
  if (!found || current != expected) return false;  // rewritten, restored or gone meanwhile
  rocksdb::WriteBatch batch;
  if (kind == Cf::kAttachmentPointers) {
    COFFER_RETURN_IF_ERROR(internal::DeleteSegmentsOf(db_, stored_key, entry_bytes, &batch));
  }
  COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db_->cf(cf), key), "batch"));
  JournalScope journal(journal_for_this, kind, stored_key, std::move(other_refs));
  COFFER_RETURN_IF_ERROR(journal.Begin());
  COFFER_RETURN_IF_ERROR(db_->Write(&batch));
  ++(kind == Cf::kRecords ? report->records : report->attachments);
  return true;
}

absl::Status RecycleBin::Sweep(uint64_t handle, const DatasetPolicy& policy, Cf cf, Due due,
                               PurgeJournal* journal, PurgeReport* report) {
  std::string resume = internal::DatasetBegin(handle);
  const std::string end = internal::DatasetEnd(handle);
  bool skip_resume_key = false;
  while (true) {
    std::vector<Candidate> batch;
    bool more = false;
    {
      rocksdb::Slice upper(end);
      rocksdb::ReadOptions read_options;
      read_options.iterate_upper_bound = &upper;
      ScopedIterator it = db_->NewIterator(cf, read_options);
      for (it->Seek(resume); it->Valid(); it->Next()) {
        if (skip_resume_key && it->key().ToStringView() == resume) continue;
        if (batch.size() == kSweepBatch) {
          more = true;
          break;
        }
        batch.push_back(Candidate{it->key().ToString(), it->value().ToString()});
      }
      COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
    }
    for (const Candidate& candidate : batch) {
      COFFER_RETURN_IF_ERROR(
          PurgeIfUnchanged(cf, candidate.key, candidate.value, policy, due, journal, report)
              .status());
    }
    if (!more) return absl::OkStatus();
    resume = batch.back().key;
    skip_resume_key = true;
  }
}

absl::StatusOr<BinPage> RecycleBin::List(uint64_t handle, std::string_view page_token,
                                         size_t max_items) {
  constexpr size_t kMaxItems = 10000;
  if (max_items == 0) max_items = 1000;
  if (max_items > kMaxItems) {
    return MakeError(ErrorCode::kInvalidArgument, "max_items is limited to 10000");
  }
  // A token is the bin key after the handle: cf byte ‖ HMAC of the last item returned.
  if (!page_token.empty()) {
    if (page_token.size() != internal::kBinKeySize - internal::kHandleSize) {
      return MakeError(ErrorCode::kInvalidArgument, "malformed page token");
    }
    uint8_t cf = static_cast<uint8_t>(page_token[0]);
    if (cf != static_cast<uint8_t>(Cf::kRecords) &&
        cf != static_cast<uint8_t>(Cf::kAttachmentPointers)) {
      return MakeError(ErrorCode::kInvalidArgument, "malformed page token");
    }
  }
  // Fails for an unknown, destroyed or locked dataset before anything is read.
  COFFER_RETURN_IF_ERROR(keys_->PrimaryKey(handle, KeyPurpose::kLookup, 0).status());
  int64_t period_us = 0;
  bool period_known = false;
  if (absl::StatusOr<DatasetPolicy> policy = policies_->PolicyFor(handle); policy.ok()) {
    period_us =
        std::chrono::duration_cast<std::chrono::microseconds>(policy->recycle_bin_period).count();
    period_known = true;
  }
  std::string start = internal::DatasetBegin(handle);
  start.append(page_token);
  const std::string end = internal::DatasetEnd(handle);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  ScopedIterator it = db_->NewIterator(Cf::kRecycleBin, read_options);
  BinPage page;
  std::string last_key;
  for (it->Seek(start); it->Valid(); it->Next()) {
    std::string_view key = it->key().ToStringView();
    if (!page_token.empty() && key == start) continue;
    COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts parts, internal::ParseBinKey(key));
    if (parts.cf != Cf::kRecords && parts.cf != Cf::kAttachmentPointers) continue;
    if (page.items.size() == max_items) {  // more remain: resume after the last one returned
      page.next_page_token = last_key.substr(internal::kHandleSize);
      break;
    }
    COFFER_ASSIGN_OR_RETURN(internal::BinValue bin,
                            internal::ParseBinValue(it->value().ToStringView()));
    const bool is_record = parts.cf == Cf::kRecords;
    COFFER_ASSIGN_OR_RETURN(
        internal::OpenedEntry opened,
        internal::OpenEntry(keys_, parts.cf,
                            is_record ? KeyPurpose::kRecords : KeyPurpose::kAttachments,
                            parts.stored_key, bin.entry));
    BinEntry item;
    item.kind = is_record ? BinEntry::Kind::kRecord : BinEntry::Kind::kAttachment;
    item.id = std::move(opened.id);
    item.deleted_micros = bin.deleted_at_us;
    item.purge_after_micros = period_known ? bin.deleted_at_us + period_us : 0;
    page.items.push_back(std::move(item));
    last_key.assign(key);
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
  return page;
}

absl::StatusOr<PurgeReport> RecycleBin::PurgeExpired() {
  PurgeReport report;
  std::string next;  // the first key of the next dataset to look at
  while (true) {
    uint64_t handle = 0;
    {
      ScopedIterator it = db_->NewIterator(Cf::kRecycleBin);
      it->Seek(next);
      COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
      if (!it->Valid()) break;
      handle = internal::HandleOf(it->key().ToStringView());
    }
    absl::StatusOr<DatasetPolicy> policy = policies_->PolicyFor(handle);
    if (!policy.ok()) {
      ++report.datasets_without_policy;
    } else if (policy->legal_hold) {
      ++report.datasets_on_hold;
    } else {
      size_t before = report.records + report.attachments;
      COFFER_RETURN_IF_ERROR(
          Sweep(handle, *policy, Cf::kRecycleBin, Due::kBinExpired, journal_, &report));
      if (report.records + report.attachments > before) {
        COFFER_RETURN_IF_ERROR(db_->PurgePhysically(handle));
      }
    }
    if (handle == UINT64_MAX) break;
    next = internal::DatasetEnd(handle);
  }
  return report;
}

absl::StatusOr<PurgeReport> RecycleBin::EnforceMaxAge(uint64_t handle) {
  PurgeReport report;
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies_->PolicyFor(handle));
  if (!policy.max_age.has_value()) return report;
  if (policy.legal_hold) {
    report.datasets_on_hold = 1;
    return report;
  }
  for (Cf cf : {Cf::kRecords, Cf::kAttachmentPointers, Cf::kRecycleBin}) {
    COFFER_RETURN_IF_ERROR(Sweep(handle, policy, cf, Due::kMaxAge, journal_, &report));
  }
  if (report.records + report.attachments > 0) {
    COFFER_RETURN_IF_ERROR(db_->PurgePhysically(handle));
  }
  return report;
}

absl::StatusOr<PurgeReport> RecycleBin::EmptyBin(uint64_t handle, PurgeJournal* journal) {
  PurgeReport report;
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies_->PolicyFor(handle));
  if (policy.legal_hold) {
    return MakeError(ErrorCode::kLegalHold, "a legal hold on the dataset blocks purges");
  }
  COFFER_RETURN_IF_ERROR(Sweep(handle, policy, Cf::kRecycleBin, Due::kNow,
                               journal != nullptr ? journal : journal_, &report));
  if (report.records + report.attachments > 0) {
    COFFER_RETURN_IF_ERROR(db_->PurgePhysically(handle));
  }
  return report;
}

absl::Status RecycleBin::PurgeItem(Cf cf, uint64_t handle, std::string_view name,
                                   ErrorCode not_found, PurgeJournal* journal_for_this) {
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies_->PolicyFor(handle));
  if (policy.legal_hold) {
    return MakeError(ErrorCode::kLegalHold, "a legal hold on the dataset blocks purges");
  }
  {
    // Live and binned entries of the name under every live lookup version go in one batch.
    COFFER_ASSIGN_OR_RETURN(internal::LockedId locked, internal::LockId(db_, keys_, handle, name));
    auto now = clock_->Now();
    rocksdb::WriteBatch batch;
    // The journal's ref: the stored key the item was found under (live first), which is also
    // the version an older backup holds it under (entries only ever move to newer versions).
    std::string journaled_key;
    const auto compliance = [&](std::string_view value) -> absl::Status {
      COFFER_ASSIGN_OR_RETURN(internal::Entry entry, internal::ParseEntry(cf, value));
      return internal::CheckComplianceLock(policy, entry.written_at_us, now);
    };
    for (const std::string& stored_key : locked.keys.stored_keys) {
      COFFER_ASSIGN_OR_RETURN(internal::StoredItem item,
                              internal::ReadStoredItem(db_, cf, stored_key));
      COFFER_RETURN_IF_ERROR(DeleteStoredItem(db_, cf, item, compliance, &batch));
      if (item.live || (item.binned && journaled_key.empty())) journaled_key = stored_key;
    }
    if (journaled_key.empty()) return MakeError(not_found, "nothing live or in the bin");
    std::vector<crypto::HmacSha256Tag> other_refs;
    for (const std::string& stored_key : locked.keys.stored_keys) {
      if (stored_key != journaled_key) other_refs.push_back(internal::RefOf(stored_key));
    }
    JournalScope journal(journal_for_this != nullptr ? journal_for_this : journal_, cf,
                         journaled_key, std::move(other_refs));
    COFFER_RETURN_IF_ERROR(journal.Begin());
    COFFER_RETURN_IF_ERROR(db_->Write(&batch));
  }
  return db_->PurgePhysically(handle);
}

absl::StatusOr<size_t> RecycleBin::ReplayPurges(DataDb* db, uint64_t handle, PurgedItemKind kind,
                                                std::span<const crypto::HmacSha256Tag> refs) {
  const Cf cf = kind == PurgedItemKind::kRecord ? Cf::kRecords : Cf::kAttachmentPointers;
  size_t deleted = 0;
  for (const crypto::HmacSha256Tag& ref : refs) {
    std::string stored_key = internal::StoredKey(handle, ref);
    std::lock_guard<std::mutex> lock(db->StripeFor(internal::MacOf(stored_key)));
    COFFER_ASSIGN_OR_RETURN(internal::StoredItem item,
                            internal::ReadStoredItem(db, cf, std::move(stored_key)));
    if (!item.live && !item.binned) continue;
    rocksdb::WriteBatch batch;
    COFFER_RETURN_IF_ERROR(DeleteStoredItem(db, cf, item, nullptr, &batch));
    COFFER_RETURN_IF_ERROR(db->Write(&batch));
    ++deleted;
  }
  if (deleted > 0) COFFER_RETURN_IF_ERROR(db->PurgePhysically(handle));
  return deleted;
}

absl::StatusOr<BinMoveReport> RecycleBin::ReplayBinMoves(DataDb* db, uint64_t handle,
                                                         PurgedItemKind kind,
                                                         std::span<const BinMove> moves) {
  const Cf cf = kind == PurgedItemKind::kRecord ? Cf::kRecords : Cf::kAttachmentPointers;
  BinMoveReport report;
  for (const BinMove& move : moves) {
    std::string stored_key = internal::StoredKey(handle, move.ref);
    std::lock_guard<std::mutex> lock(db->StripeFor(internal::MacOf(stored_key)));
    COFFER_ASSIGN_OR_RETURN(internal::StoredItem item,
                            internal::ReadStoredItem(db, cf, std::move(stored_key)));
    rocksdb::WriteBatch batch;
    if (move.to_bin) {
      if (!item.live) {
        ++report.not_found;
        continue;
      }
      // As MoveToBin: the bin keeps the latest deletion, and an older binned attachment's
      // segments go with the entry they belonged to.
      if (item.binned && cf == Cf::kAttachmentPointers) {
        COFFER_ASSIGN_OR_RETURN(internal::BinValue old, internal::ParseBinValue(*item.binned));
        COFFER_RETURN_IF_ERROR(internal::DeleteSegmentsOf(db, item.stored_key, old.entry, &batch));
      }
      COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db->cf(cf), item.stored_key), "batch"));
      COFFER_RETURN_IF_ERROR(
          FromRocks(batch.Put(db->cf(Cf::kRecycleBin), item.bin_key,
                              internal::EncodeBinValue(move.at_micros, *item.live)),
                    "batch"));
      ++report.to_bin;
    } else {
      if (!item.binned || item.live) {
        ++report.not_found;
        continue;
      }
      COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(*item.binned));
      COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(db->cf(cf), item.stored_key, bin.entry), "batch"));
      COFFER_RETURN_IF_ERROR(
          FromRocks(batch.Delete(db->cf(Cf::kRecycleBin), item.bin_key), "batch"));
      ++report.from_bin;
    }
    COFFER_RETURN_IF_ERROR(db->Write(&batch));
  }
  return report;
}

absl::StatusOr<RecycleBin::StoredCount> RecycleBin::CountStored(
    DataDb* db, uint64_t handle, PurgedItemKind kind, std::span<const crypto::HmacSha256Tag> refs) {
  const Cf cf = kind == PurgedItemKind::kRecord ? Cf::kRecords : Cf::kAttachmentPointers;
  std::set<crypto::HmacSha256Tag> distinct(refs.begin(), refs.end());
  StoredCount count;
  count.distinct = distinct.size();
  for (const crypto::HmacSha256Tag& ref : distinct) {
    COFFER_ASSIGN_OR_RETURN(internal::StoredItem item,
                            internal::ReadStoredItem(db, cf, internal::StoredKey(handle, ref)));
    if (item.live || item.binned) ++count.held;
  }
  return count;
}

absl::StatusOr<PurgedItemKind> RecycleBin::PurgeDamaged(uint64_t handle, std::string_view ref,
                                                        PurgeJournal* journal_for_this) {
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies_->PolicyFor(handle));
  if (policy.legal_hold) {
    return MakeError(ErrorCode::kLegalHold, "a legal hold on the dataset blocks purges");
  }
  COFFER_ASSIGN_OR_RETURN(auto found, FindByDamagedRef(db_, handle, ref));
  const Cf found_cf = found.first;
  const std::string found_key = std::move(found.second);
  if (found_key.empty()) {
    return MakeError(ErrorCode::kNotFound,
                     "no item of the dataset has this damaged-item reference");
  }
  absl::StatusOr<internal::BinKeyParts> item = internal::ItemKeyOf(found_cf, found_key);
  if (!item.ok()) {
    return MakeError(ErrorCode::kNotFound, "the reference names no record or attachment");
  }
  const Cf item_cf = item->cf;
  const std::string& stored_key = item->stored_key;
  {
    std::lock_guard<std::mutex> lock(db_->StripeFor(internal::MacOf(stored_key)));
    std::string value;
    bool present = false;
    COFFER_RETURN_IF_ERROR(db_->Get(found_cf, found_key, &value, &present));
    if (!present) {
      return MakeError(ErrorCode::kNotFound, "the item with this reference is gone");
    }
    // A bin value too damaged to parse leaves no entry (its item is purged all the same).
    const std::string_view entry = internal::EntryOf(found_cf, value).value_or(std::string_view());
    // Only a damaged item (as scrub finds it: the entry, an attachment's every segment): a
    // healthy one is purged by its id.
    absl::Status opened = CheckItem(db_, keys_, found_cf, found_key, value);
    if (opened.ok()) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "the item with this reference is not damaged; purge it by its id");
    }
    if (!IsItemDamage(opened)) return opened;
    absl::StatusOr<internal::Entry> parsed = internal::ParseEntry(item_cf, entry);
    if (parsed.ok()) {
      COFFER_RETURN_IF_ERROR(
          internal::CheckComplianceLock(policy, parsed->written_at_us, clock_->Now()));
    } else if (policy.min_retention.count() > 0) {
      return MakeError(ErrorCode::kComplianceLocked,
                       "the dataset has a minimum retention and this item's write time cannot "
                       "be read");
    }
    rocksdb::WriteBatch batch;
    // Segments are found through the pointer's upload id; a pointer too damaged to parse leaves
    // them (unreachable ciphertext, erased with the dataset).
    if (item_cf == Cf::kAttachmentPointers && parsed.ok()) {
      COFFER_RETURN_IF_ERROR(internal::DeleteSegmentsOf(db_, stored_key, entry, &batch));
    }
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db_->cf(found_cf), found_key), "batch"));
    JournalScope journal(journal_for_this != nullptr ? journal_for_this : journal_, item_cf,
                         stored_key);
    COFFER_RETURN_IF_ERROR(journal.Begin());
    COFFER_RETURN_IF_ERROR(db_->Write(&batch));
  }
  COFFER_RETURN_IF_ERROR(db_->PurgePhysically(handle));
  return item_cf == Cf::kRecords ? PurgedItemKind::kRecord : PurgedItemKind::kAttachment;
}

absl::Status RecycleBin::PurgeRecord(uint64_t handle, std::string_view id, PurgeJournal* journal) {
  return PurgeItem(Cf::kRecords, handle, id, ErrorCode::kRecordNotFound, journal);
}

absl::Status RecycleBin::PurgeAttachment(uint64_t handle, std::string_view name,
                                         PurgeJournal* journal) {
  return PurgeItem(Cf::kAttachmentPointers, handle, name, ErrorCode::kAttachmentNotFound, journal);
}

}  // namespace coffer::storage
