// StoreGraph: the key manager over a data DB and the stores clients write through, wired once
// for cofferd and for the tests that stand in for it (they used to wire it by hand, each a little
// differently: one forgot the lookup census's key provider).
//
// Open makes the data counter (StoreDataCounter over the data DB), opens the key manager with it,
// gives the counter the manager as its key provider (the lookup census opens entries), then
// builds the policy source, the quota meter (the datasets' quotas, storage/quota_meter.h) and the
// record, attachment and recycle-bin stores over them, on the key manager's clock. They are
// destroyed in the reverse order. The data DB is borrowed, so a test can close the graph and open
// another on the same DB (a key-manager restart).
//
// Thread safety: the parts are as thread-safe as they are (kms/keys/key_manager.h,
// storage/*.h). Ownership: owns the parts; borrows the data DB, the purge journal and what
// KeyManagerOptions names, which must outlive the graph. Failures: INVALID_ARGUMENT for a missing
// data DB or clock, or a data counter already set; the key manager's codes (KeyManager::Open).

#ifndef COFFER_KMS_KEYS_STORE_GRAPH_H_
#define COFFER_KMS_KEYS_STORE_GRAPH_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/storage_bridge.h"
#include "storage/attachment_store.h"
#include "storage/data_db.h"
#include "storage/purge_journal.h"
#include "storage/quota_meter.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"

namespace coffer::kms {

struct StoreGraphOptions {
  storage::DataDb* data_db = nullptr;  // required
  // The key manager's options; data_counter must stay null (the graph's counter is used).
  KeyManagerOptions keys;
  storage::PurgeJournal* purge_journal = nullptr;  // the recycle bin's; optional
};

class StoreGraph {
 public:
  static absl::StatusOr<std::unique_ptr<StoreGraph>> Open(StoreGraphOptions options);
  StoreGraph(const StoreGraph&) = delete;
  StoreGraph& operator=(const StoreGraph&) = delete;
  ~StoreGraph();

  storage::DataDb& data_db() const { return *data_db_; }
  StoreDataCounter& counter() const { return *counter_; }
  KeyManager& key_manager() const { return *key_manager_; }
  KeyManagerPolicySource& policies() const { return *policies_; }
  storage::RecordStore& records() const { return *records_; }
  storage::AttachmentStore& attachments() const { return *attachments_; }
  storage::RecycleBin& bin() const { return *bin_; }
  storage::QuotaMeter& quota() const { return *quota_; }

 private:
  explicit StoreGraph(storage::DataDb* data_db) : data_db_(data_db) {}

  storage::DataDb* data_db_;
  std::unique_ptr<StoreDataCounter> counter_;
  std::unique_ptr<KeyManager> key_manager_;
  std::unique_ptr<KeyManagerPolicySource> policies_;
  std::unique_ptr<storage::QuotaMeter> quota_;  // before the stores, which borrow it
  std::unique_ptr<storage::RecordStore> records_;
  std::unique_ptr<storage::AttachmentStore> attachments_;
  std::unique_ptr<storage::RecycleBin> bin_;
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_STORE_GRAPH_H_
