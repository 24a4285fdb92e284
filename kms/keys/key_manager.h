// KeyManager: datasets, versioned data keys, rotation, retirement, re-wrap and lifecycle, over
// the HSM (hsm::KeyWrapper per PKCS#11 module), the key DB (kms/keys/key_db.h) and the key cache
// (kms/keys/key_cache.h), with every key operation in the audit log. It implements
// storage::KeyProvider. Rules, states, intents and formats: docs/key-manager.md.
//
// Durability: every change is one synced key-DB batch. A new DEK version is durable before it
// becomes primary, so no data is ever acknowledged under a key the DB does not hold.
// Multi-step operations (create, destroy, re-wrap) persist an intent before their first side
// effect; Open() completes or rolls back each one and reconciles token objects with key-DB rows.
//
// Audit, failing closed: each key operation appends its entry (KEY_ROTATE, DATASET_DISABLE, ...)
// to the AuditLog, synchronously. Single-step operations append before the change is published
// and do not make the change when the append fails (AUDIT_NOT_DURABLE / AUDIT_LOG_CLOSED
// returned); multi-step ones append REQUESTED before the first side effect and COMPLETED after
// the last, and report failure if the COMPLETED entry cannot be made durable. Refused requests
// (bad name, unknown dataset, wrong state, hold, ...) are audited as REQUEST_REFUSED with the
// stable code, and nothing changes. Unwraps on a cache miss are audited as KEY_UNWRAP; a key is
// handed out only after its entry is durable.
//
// Threads: every method may be called from any thread. Admin operations are serialised by one
// mutex. Readers (PrimaryKey, KeyForVersion, Describe*) read an immutable per-dataset snapshot
// swapped atomically, so they never wait for a rotation's HSM call; a cache hit makes no HSM
// call and takes no lock shared by all datasets (a per-dataset lock is taken only to persist a
// new block of reserved encryptions, once per `usage_reservation_block`).
//
// Time: everything time-based reads the injected Clock. A persisted high-water mark detects a
// clock moved backwards: RunDueWork then rotates and expires nothing and audits the event.
//
// Ownership: the KeyManager owns the key DB and the cache; the wrappers, row authenticator,
// signer, audit log, clock and counter are borrowed and must outlive it.
//
// Data access by state: ACTIVE serves both PrimaryKey and KeyForVersion. DISABLED and
// PENDING_DESTRUCTION refuse both (DATASET_STATE_FORBIDS: a locked dataset is locked for reads
// too; export is a separate, dual-controlled admin path). DESTROYING and DESTROYED return
// KEY_DESTROYED for every version.

#ifndef COFFER_KMS_KEYS_KEY_MANAGER_H_
#define COFFER_KMS_KEYS_KEY_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "crypto/base/progress.h"
#include "hsm/key_wrapper.h"
#include "hsm/service_keys.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"
#include "kms/keys/internal/dataset_names.h"
#include "kms/keys/key_cache.h"
#include "kms/keys/key_db.h"
#include "kms/keys/key_db.pb.h"
#include "kms/keys/key_manager_types.h"
#include "storage/dataset_erasure.h"
#include "storage/key_provider.h"

namespace coffer::kms {

namespace internal {
struct DatasetEntry;
struct DatasetSnapshot;
struct VersionSnapshot;
}  // namespace internal

struct KeyManagerOptions {
  std::string key_db_directory;
  // PKCS#11 modules by a configured name; DWKs of new datasets go to `default_module`.
  std::map<std::string, hsm::KeyWrapper*> modules;
  std::string default_module;
  hsm::RowAuthenticator* row_authenticator = nullptr;  // required: key-DB row tags
  hsm::Signer* signer = nullptr;                       // required: tombstones
  audit::AuditLog* audit_log = nullptr;                // required
  const Clock* clock = nullptr;                        // required
  KeyCacheOptions cache;
  DatasetPolicy default_policy;
  // Encryptions reserved (persisted) at a time per version; a restart counts them all as used.
  uint64_t usage_reservation_block = uint64_t{1} << 20;
  // RunDueWork rotates a primary once it has used this share (percent) of its usage limit, so
  // writers rarely meet the limit itself (where PrimaryKey rotates inline).
  uint32_t usage_rotate_percent = 90;
  ProtectedDataCounter* data_counter = nullptr;  // needed to retire versions
  CrashPoint crash_point;                        // test seam; empty in the daemon
  // A key DB restored from a backup (FullBackups::RestoreInto), opened while the live daemon
  // owns the token: this manager never creates or destroys a token object. Open resolves the
  // intents the backup captured in key-DB rows only (kms/keys/recovery.cc; docs/key-manager.md,
  // "Intents in a restored key DB"), and a destruction whose DWKs the token still holds is left
  // DESTROYING for the daemon that later serves the directory.
  bool restored_copy = false;
  // The newest key-DB generation the audit log recorded (audit::AuditLog::
  // recorded_key_db_generation()): Open refuses, with KEY_DB_ROLLED_BACK and before writing
  // anything, a key DB whose generation is lower — an older copy put back in place
  // (docs/key-manager.md, "Key DB generation"). Checked before any write because recovery,
  // migrations and reconciliation write batches, each raising the generation: an old copy
  // must not climb past the check. Unset (a log that never recorded one, or a restore opening
  // its legitimately older copy): not checked.
  std::optional<uint64_t> minimum_key_db_generation;
};

class KeyManager final : public storage::KeyProvider {
 public:
  // Opens the key DB, verifies every row (KEY_DB_ROW_CORRUPT on the first bad one: nothing is
  // served from a DB that fails authentication), resumes intents, reconciles every module's
  // DWKs with the rows (see recovery_report()), and checks the clock against its high-water
  // mark.
  static absl::StatusOr<std::unique_ptr<KeyManager>> Open(KeyManagerOptions options);
  ~KeyManager() override;

  const RecoveryReport& recovery_report() const { return recovery_; }

  // Creates a dataset: a name of 1-128 characters of [a-z0-9._/-], unique
  // (DATASET_NAME_INVALID, DATASET_EXISTS); `policy` defaults to the options' default. Returns
  // the new opaque handle. Creates DWK version 1 and version 1 of every purpose's DEK.
  absl::StatusOr<uint64_t> CreateDataset(std::string_view name, std::optional<DatasetPolicy> policy,
                                         const audit::AuditActor& actor);

  std::vector<DatasetSummary> ListDatasets() const;
  absl::StatusOr<DatasetInfo> DescribeDataset(uint64_t handle) const;
  absl::StatusOr<uint64_t> FindDataset(std::string_view name) const;
  absl::StatusOr<DatasetStorageView> StorageView(uint64_t handle) const;

  // Makes a new version of `purpose` primary (O(1): one wrap, one synced batch). Refused
  // (FAILED_PRECONDITION) for lookup unless kReindex or kEmergency, pseudonym unless kRekey or
  // kEmergency, records and attachments for kReindex and kRekey. ACTIVE datasets only. Returns
  // the new version.
  absl::StatusOr<uint32_t> Rotate(uint64_t handle, storage::KeyPurpose purpose, RotationCause cause,
                                  const audit::AuditActor& actor);

  // Rotates every purpose at once (cause kEmergency, so the audit log shows one emergency) and
  // marks every older, unretired records, attachments and lookup version COMPROMISED;
  // RetireCompromised (and RunDueWork) retires them once the counter reports no data left under
  // them (the re-encryption and re-index jobs move it). Older pseudonym versions stay live: the
  // CRM's stored tokens need them until the operator confirms its translate run
  // (RetirePseudonymAfterTranslate).
  absl::Status EmergencyRotate(uint64_t handle, const audit::AuditActor& actor);

  // Retires the COMPROMISED versions of dataset `handle` that no data uses any more (records,
  // attachments, lookup), oldest first; the first failure, or OK (also when none was due).
  absl::Status RetireCompromised(uint64_t handle, const audit::AuditActor& actor);

  // Sets the minimum decryption version of `purpose` to `min_version` (<= primary): versions
  // below it become RETIRED and stop decrypting. Refused with KEY_VERSION_IN_USE if the data
  // counter reports data under any of them; FAILED_PRECONDITION without a counter. Writes under
  // those versions are turned away (AcceptsWrites) from before the counter's barrier and count
  // until the retirement ends, so none lands under a version once it is retired.
  absl::Status RetireBelow(uint64_t handle, storage::KeyPurpose purpose, uint32_t min_version,
                           const audit::AuditActor& actor);

  // Retires pseudonym versions below `min_version`, on the operator's word that the CRM's
  // translate run moved every stored token to a version >= min_version (coffer never sees the
  // tokens, so nothing here can count them). RetireBelow refuses pseudonym versions with
  // FAILED_PRECONDITION pointing here; nothing retires them automatically (design brief: the
  // pseudonym key changes only by an explicit re-key the CRM drives). Tokens of a retired
  // version no longer re-identify or translate.
  absl::Status RetirePseudonymAfterTranslate(uint64_t handle, uint32_t min_version,
                                             const audit::AuditActor& actor);

  // Replaces the dataset's policies (one POLICY_CHANGE entry per changed field). A legal hold
  // changes through SetLegalHold only.
  absl::Status SetPolicy(uint64_t handle, const DatasetPolicy& policy,
                         const audit::AuditActor& actor);
  absl::Status SetLegalHold(uint64_t handle, bool hold, const audit::AuditActor& actor);

  // ACTIVE -> DISABLED (cache entries wiped at once) and back.
  absl::Status Disable(uint64_t handle, const audit::AuditActor& actor);
  absl::Status Enable(uint64_t handle, const audit::AuditActor& actor);

  // DISABLED -> PENDING_DESTRUCTION, destroyed by RunDueWork once the waiting period has
  // passed (LEGAL_HOLD_ACTIVE under a hold). Cancel: PENDING_DESTRUCTION -> DISABLED;
  // DESTRUCTION_STARTED once destruction has begun. `approval`: the second admin who approved
  // the schedule under dual control; it goes into the tombstone and the deletion receipt.
  absl::Status ScheduleDestruction(uint64_t handle, const audit::AuditActor& actor,
                                   const std::optional<AdminApproval>& approval = {});
  absl::Status CancelDestruction(uint64_t handle, const audit::AuditActor& actor);

  // Moves every DEK version of the dataset to a new DWK: the next version in `module` (empty =
  // the dataset's current module), or version 1.. in another module (migration). Resumable: a
  // crash leaves a REWRAPPING intent that Open finishes. With `destroy_old`, the old DWK is
  // destroyed once no row refers to it. Data is not touched. `progress` gets one phase,
  // "rewrap", in DEK versions: total = the versions to move, a report after each one moved
  // (crypto/base/progress.h; called on the caller's thread, under the admin lock).
  absl::Status Rewrap(uint64_t handle, std::string_view module, bool destroy_old,
                      const audit::AuditActor& actor, const coffer::ProgressFn& progress = {});

  // The scheduler's tick (the daemon calls it periodically; tests with a fake clock): rotates
  // each ACTIVE dataset's records/attachments primary whose age reached its period — once,
  // however late — or whose usage passed usage_rotate_percent; destroys datasets whose waiting
  // period passed (not under a hold); retires compromised versions with no data left; drops
  // cached keys past the cache's time-to-live (KeyCache::DropExpired), so an unwrapped key leaves
  // memory even when nobody asks for it again. Nothing time-based runs, and
  // CLOCK_WENT_BACKWARDS is audited, while the clock reads earlier than the persisted
  // high-water mark.
  absl::StatusOr<DueWorkReport> RunDueWork();

  // Restore support (kms/keys/full_backup.h). CheckpointKeyDb writes a consistent copy of the key
  // DB into `target_dir` (which must not exist). ReplayDestruction destroys dataset `handle` in
  // this (restored) key DB because the live audit log shows it destroyed: whatever its state
  // or hold here, its remaining DWKs are destroyed (absent ones count as done) and it ends
  // DESTROYED with a tombstone, audited as DATASET_DESTROY. With `restored_copy` no DWK is
  // destroyed here: the dataset ends DESTROYED once the token holds none of its DWKs (the live
  // daemon destroyed them), and stays DESTROYING otherwise (serving nothing; the daemon that
  // serves the directory finishes it). OK when the dataset is already DESTROYED or unknown here
  // (created after the backup).
  absl::Status CheckpointKeyDb(const std::string& target_dir);
  absl::Status ReplayDestruction(uint64_t handle, const audit::AuditActor& actor);

  // The key DB's generation (KeyDb::generation): durable, never lower than any value returned
  // before. Lock-free; any thread (the audit log reads it for every checkpoint).
  uint64_t key_db_generation() const;
  // Raises the key DB's generation to at least `at_least` in one synced batch (for a restore:
  // kms/keys/full_backup.h) and returns the generation written.
  absl::StatusOr<uint64_t> AdvanceKeyDbGeneration(uint64_t at_least);

  // A destroyed dataset's signed tombstone (DATASET_STATE_FORBIDS before destruction).
  absl::StatusOr<SignedTombstone> GetTombstone(uint64_t handle) const;

  // Deletion receipts (kms/keys/deletion_receipts.h drives these; docs/key-manager.md, "Deletion
  // receipt"). Each refuses a dataset that is not DESTROYED with DATASET_STATE_FORBIDS.
  // DESTROYED datasets whose receipt is not issued yet, in handle order.
  std::vector<uint64_t> DestroyedAwaitingReceipt() const;
  // The erase's bookkeeping so far (all zero before BeginErasure).
  absl::StatusOr<v1::DataErasure> Erasure(uint64_t handle) const;
  // Records what the data DB held (counted just before the erase) and audits DATASET_ERASE
  // REQUESTED. Once only: a later call returns the first record unchanged.
  absl::StatusOr<v1::DataErasure> BeginErasure(uint64_t handle,
                                               const storage::DatasetDataCounts& counts,
                                               const audit::AuditActor& actor);
  // Records that the purge compaction finished and audits DATASET_ERASE COMPLETED
  // (DATASET_STATE_FORBIDS before BeginErasure). Once only.
  absl::Status FinishErasure(uint64_t handle, const audit::AuditActor& actor);
  // Builds the deletion receipt from the tombstone and the erase, signs it in the token, stores
  // it and audits DELETION_RECEIPT; returns the receipt file (kms/formats/receipt_file.h).
  // DATASET_STATE_FORBIDS before FinishErasure. Once only: later calls return the stored file.
  absl::StatusOr<std::string> IssueDeletionReceipt(uint64_t handle, const audit::AuditActor& actor);
  // The stored receipt file (DATASET_STATE_FORBIDS until issued).
  absl::StatusOr<std::string> GetDeletionReceipt(uint64_t handle) const;
  // Destroyed datasets that were named `name` (matched by the tombstone's name hash), the most
  // recently destroyed first.
  std::vector<uint64_t> FindDestroyed(std::string_view name) const;

  // storage::KeyProvider.
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> PrimaryKey(uint64_t dataset_handle,
                                                                     storage::KeyPurpose purpose,
                                                                     uint64_t encryptions) override;
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyForVersion(uint64_t dataset_handle,
                                                                        storage::KeyPurpose purpose,
                                                                        uint32_t version) override;
  // Version numbers only, in any state but DESTROYING/DESTROYED (KEY_DESTROYED): they reveal no
  // key, and every key still comes through KeyForVersion or ExportKey, which check the state.
  absl::StatusOr<std::vector<uint32_t>> LiveVersions(uint64_t dataset_handle,
                                                     storage::KeyPurpose purpose) override;
  // Live, and not below a retirement under way (RetireBelow: the versions it retires are turned
  // away before its barrier and final count). Any dataset state: the write itself checks it.
  absl::StatusOr<bool> AcceptsWrites(uint64_t dataset_handle, storage::KeyPurpose purpose,
                                     uint32_t version) override;

  KeyCacheStats cache_stats() const { return cache_.Stats(); }

  // Grants at run time (kms/keys/key_manager_grants.cc; the rules are kms/ops/runtime_grants.h's):
  // rows of the meta family under "grant/" ‖ id (u64 BE), authenticated like every key-DB row
  // (a row failing its tag fails Open and these calls with KEY_DB_ROW_CORRUPT), grants format 1
  // (v1::GrantsFormatRow; a newer one fails Open with UNSUPPORTED_FORMAT).
  // Every stored grant, by id.
  absl::StatusOr<std::vector<v1::GrantRow>> StoredGrants() const;
  // Stores `row` (its id and created_micros are set here; the id is never reused) in one synced
  // batch with the id counter. ALREADY_EXISTS when a stored grant has the same principal,
  // dataset and rights.
  absl::StatusOr<v1::GrantRow> AddGrant(v1::GrantRow row);
  // Removes stored grant `id` and returns it; NOT_FOUND when there is none.
  absl::StatusOr<v1::GrantRow> RemoveGrant(uint64_t id);

  // The access audit's failure policy (kms/keys/key_manager_audit_policy.cc;
  // v1::AccessAuditPolicyRow under meta "access_audit_policy", format 1): kFailClosed until
  // SetAccessAuditFailure stores another. Lock-free: the data path reads it when an access entry
  // could not be audited.
  AccessAuditFailure access_audit_failure() const { return access_audit_failure_.load(); }
  // Stores `policy` and returns the previous one. A change is audited as every policy change:
  // POLICY_CHANGE ("access_audit_failure", old, new; dataset handle 0) REQUESTED before the row
  // is written and COMPLETED with the result after; no change, no entry. INVALID_ARGUMENT for a
  // value outside the enum. Whether a second admin must approve is the operation table's rule.
  absl::StatusOr<AccessAuditFailure> SetAccessAuditFailure(AccessAuditFailure policy,
                                                           const audit::AuditActor& actor);

  // Export (kms/ops/export_operations.h): the daemon's own read path into a DISABLED or
  // PENDING_DESTRUCTION dataset, which PrimaryKey and KeyForVersion refuse. Returns the key of
  // `version`, or with no version the current primary of `purpose` (counting no encryption:
  // export only opens and hashes, never seals under a dataset key). DATASET_STATE_FORBIDS for
  // ACTIVE (use the data path); KEY_DESTROYED once destruction began; the other errors as
  // KeyForVersion. Every call unwraps in the HSM (audited as KEY_UNWRAP) and bypasses the key
  // cache, which holds keys of ACTIVE datasets only; the caller keeps the keys of one export.
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> ExportKey(
      uint64_t dataset_handle, storage::KeyPurpose purpose, std::optional<uint32_t> version);

 private:
  using Snapshot = std::shared_ptr<const internal::DatasetSnapshot>;
  using EntryPtr = std::shared_ptr<internal::DatasetEntry>;
  using DatasetMap = std::map<uint64_t, EntryPtr>;

  explicit KeyManager(KeyManagerOptions options, std::unique_ptr<KeyDb> db);

  // Open.
  absl::Status LoadAll();
  // Rewrites a names-v1 key DB to names-v2 (kms/keys/internal/dataset_names.h) in one batch.
  absl::Status MigrateNames();
  // Records policy format 2 (v1::PolicyFormatRow) in a key DB that has none: no row changes
  // (format 1 rows read the same under format 2), so one synced batch is the whole migration.
  absl::Status MigratePolicyFormat();
  // Checks the grants format (v1::GrantsFormatRow) and every grant row's tag; records format 1
  // in a key DB that has none, in a batch of its own.
  absl::Status OpenGrants();
  // Reads the access audit policy row (its tag checked; a format other than 1 fails Open with
  // UNSUPPORTED_FORMAT).
  absl::Status OpenAccessAuditPolicy();
  // Resolves the intents a crash left (recovery.cc), one Recover* per intent kind.
  absl::Status Recover();
  absl::Status RecoverCreating(uint64_t handle, const v1::IntentRow& intent,
                               const audit::AuditActor& actor);
  absl::Status RecoverDestroying(uint64_t handle, const v1::IntentRow& intent);
  absl::Status RecoverRewrapping(uint64_t handle, const v1::IntentRow& intent,
                                 const std::string& intent_bytes, const audit::AuditActor& actor);
  absl::Status Reconcile();
  absl::Status CheckClockAtOpen();

  // Lookup and publication.
  EntryPtr FindEntry(uint64_t handle) const;
  absl::StatusOr<EntryPtr> RequireEntry(uint64_t handle) const;
  void Publish(const EntryPtr& entry, Snapshot snapshot);
  void AddEntry(uint64_t handle, Snapshot snapshot);

  // Audit helpers. Append fails closed; Refuse audits a refusal and returns `why`.
  absl::Status Audit(const audit::AuditEvent& event);
  absl::StatusOr<uint64_t> AuditAt(const audit::AuditEvent& event);  // returns the sequence
  absl::Status Refuse(audit::v1::EventKind attempted, uint64_t handle,
                      const audit::AuditActor& actor, absl::Status why);

  // Stages dataset `row` into `batch` as stored: the name sealed, never in plaintext.
  absl::Status PutDatasetRow(KeyDb::Batch& batch, const v1::DatasetRow& row) const;

  hsm::KeyWrapper* Module(const std::string& name) const;
  // Whether the token (module `ref.module()`) holds DWK {handle, ref.version()}: a read only.
  absl::StatusOr<bool> TokenHolds(uint64_t handle, const v1::WrappingKeyRef& ref) const;
  void Crash(std::string_view step) const;
  int64_t NowMicros() const;
  // A random dataset handle no dataset here has (CreateDataset).
  absl::StatusOr<uint64_t> NewDatasetHandle() const;

  // The one unwrap-on-miss path: unwraps `version` in the HSM, audits KEY_UNWRAP, keys a
  // DataKey. Called by the cache's loader only.
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> UnwrapOnMiss(
      uint64_t handle, const internal::VersionSnapshot& version);
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> CachedKey(
      const EntryPtr& entry, const internal::VersionSnapshot& version);

  // Rotation under admin_mu_.
  absl::StatusOr<uint32_t> RotateLocked(const EntryPtr& entry, storage::KeyPurpose purpose,
                                        RotationCause cause, const audit::AuditActor& actor);
  absl::Status ReserveUsage(const EntryPtr& entry, storage::KeyPurpose purpose, uint32_t version,
                            uint64_t needed);
  absl::Status RotateForUsage(uint64_t handle, storage::KeyPurpose purpose, uint32_t version);
  // How a retirement proves the versions unused: by the data counter; by the data counter, and
  // only COMPROMISED versions (the scheduler after an emergency rotation); or, for pseudonym
  // keys only, by the operator's confirmation that the CRM's translate run is done.
  enum class RetireProof { kDataCounter, kCompromisedOnly, kTranslateConfirmed };
  absl::Status RetireLocked(const EntryPtr& entry, storage::KeyPurpose purpose,
                            uint32_t min_version, const audit::AuditActor& actor,
                            RetireProof proof);
  // RetireLocked's steps (rotation.cc): the data counter shows versions [from, below) of
  // `purpose` unused (refusals audited); the retirement written and published.
  absl::Status ProveVersionsUnused(uint64_t handle, const internal::DatasetSnapshot& snap,
                                   storage::KeyPurpose purpose, uint32_t from, uint32_t below,
                                   bool compromised_only, const audit::AuditActor& actor);
  absl::Status CommitRetirementLocked(const EntryPtr& entry, storage::KeyPurpose purpose,
                                      uint32_t old_min_version, uint32_t min_version);
  // RunDueWork's per-dataset steps, each adding to `report`: rotating records/attachments
  // primaries that are due (ACTIVE `snap`), retiring compromised versions with no data left,
  // scheduling and running due destructions.
  void RotateDueLocked(const EntryPtr& entry, const internal::DatasetSnapshot& snap, int64_t now,
                       const audit::AuditActor& actor, DueWorkReport& report);
  void RetireCompromisedLocked(const EntryPtr& entry, const audit::AuditActor& actor,
                               DueWorkReport& report);
  void ScheduleDueDestructionLocked(const EntryPtr& entry, int64_t now,
                                    const audit::AuditActor& actor, DueWorkReport& report);

  // COMPLIANCE_LOCKED while dataset `snap` holds an item still inside its minimum retention
  // (the data counter's newest write), with the date the lock ends.
  absl::Status CheckRetentionAllowsDestruction(const internal::DatasetSnapshot& snap) const;

  // Multi-step operations, also called by Recover.
  // `replay`: a restore replaying a destruction the live system already made (no hold check).
  absl::Status DestroyLocked(const EntryPtr& entry, const audit::AuditActor& actor,
                             bool replay = false);
  // `requested_sequence`: the DATASET_DESTROY REQUESTED entry (0 if unknown).
  absl::Status FinishDestroyLocked(const EntryPtr& entry, const audit::AuditActor& actor,
                                   uint64_t requested_sequence);
  // Whether the token holds any of dataset `handle`'s live DWKs (`row`): a read only.
  absl::StatusOr<bool> TokenHoldsAnyDwk(uint64_t handle, const v1::DatasetRow& row) const;
  // Destroys dataset `handle`'s live DWKs (`row`; absent ones count as done; none in a restored
  // copy), recording each in `tombstone`.
  absl::Status DestroyWrappingKeysLocked(uint64_t handle, const v1::DatasetRow& row,
                                         v1::Tombstone& tombstone);
  // Rewrites a DESTROYED dataset's row with `change` applied (receipt bookkeeping).
  absl::Status UpdateDestroyedRow(const EntryPtr& entry,
                                  const std::function<void(v1::DatasetRow&)>& change);
  // Restored copies: drops a REWRAPPING intent whose old or new DWK the token lacks.
  absl::Status DropRewrapIntentLocked(const EntryPtr& entry, const v1::IntentRow& intent);
  // `progress` as for Rewrap (Recover passes none).
  absl::Status ContinueRewrapLocked(const EntryPtr& entry, const std::string& intent_bytes,
                                    const coffer::ProgressFn& progress);
  // ContinueRewrapLocked's steps (rewrap.cc): every DEK version wrapped under the intent's new
  // DWK (in `target`), the dataset switched to that DWK, the old DWK destroyed once no row
  // refers to it and dropped from the live list.
  absl::Status RewrapRowsLocked(const EntryPtr& entry, hsm::KeyWrapper& target,
                                v1::IntentRow& intent, const coffer::ProgressFn& progress);
  absl::Status SwitchWrappingKeyLocked(const EntryPtr& entry, v1::IntentRow& intent);
  absl::Status DropOldWrappingKeyLocked(const EntryPtr& entry, const v1::IntentRow& intent);
  absl::Status ChangeStateLocked(const EntryPtr& entry, int new_state, audit::v1::EventKind kind,
                                 const audit::AuditActor& actor, int64_t destroy_after_micros,
                                 audit::AuditText detail = {},
                                 const std::optional<AdminApproval>& approval = std::nullopt);

  KeyManagerOptions options_;
  const Clock* clock_;
  std::unique_ptr<KeyDb> db_;
  KeyCache cache_;
  RecoveryReport recovery_;

  std::mutex admin_mu_;  // serialises admin operations, recovery and RunDueWork
  // Copy-on-write map of datasets: readers load it atomically; admin_mu_ holders replace it.
  std::atomic<std::shared_ptr<const DatasetMap>> datasets_;
  std::map<std::string, uint64_t, std::less<>> names_;       // guarded by admin_mu_
  int64_t clock_high_water_micros_ = 0;                      // guarded by admin_mu_
  std::unique_ptr<internal::DatasetNames> dataset_names_;    // set by Open, then immutable
  uint32_t names_format_ = internal::kNamesFormatPlaintext;  // guarded by admin_mu_
  uint32_t policy_format_ = 1;                               // guarded by admin_mu_
  std::atomic<AccessAuditFailure> access_audit_failure_{AccessAuditFailure::kFailClosed};
  mutable std::mutex grants_mu_;  // serialises grant changes (read-modify-write of the counter)
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_KEY_MANAGER_H_
