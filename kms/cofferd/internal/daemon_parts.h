// Internal to kms/cofferd: the daemon's parts (Daemon::Parts) and the helpers its start-up steps
// share. daemon.cc opens the HSM, the audit log and the stores and stops everything;
// scheduled_jobs.cc starts the background jobs, serving.cc the notifications and the sockets.

#ifndef COFFER_KMS_COFFERD_INTERNAL_DAEMON_PARTS_H_
#define COFFER_KMS_COFFERD_INTERNAL_DAEMON_PARTS_H_

#include <google/protobuf/util/message_differencer.h>
#include <grp.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "hsm/hsm_client.h"
#include "hsm/pin.h"
#include "kms/admin/admin_registry.h"
#include "kms/audit/anchor.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/batching_writer.h"
#include "kms/cofferd/log.h"
#include "kms/cofferd/metrics.h"
#include "kms/cofferd/startup_checks.h"
#include "kms/events/event_log.h"
#include "kms/events/event_source.h"
#include "kms/events/hook_delivery.h"
#include "kms/keys/audited_purge_journal.h"
#include "kms/keys/deletion_receipts.h"
#include "kms/keys/full_backup.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/storage_bridge.h"
#include "kms/keys/store_graph.h"
#include "kms/ops/admin_control.h"
#include "kms/ops/authz.h"
#include "kms/ops/backup_operations.h"
#include "kms/ops/canary.h"
#include "kms/ops/damaged_events.h"
#include "kms/ops/event_operations.h"
#include "kms/ops/export_operations.h"
#include "kms/ops/jobs.h"
#include "kms/ops/runtime_grants.h"
#include "kms/ops/services.h"
#include "kms/server/server.h"
#include "storage/attachment_store.h"
#include "storage/data_db.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"

namespace coffer::cofferd {
namespace internal {

// Prefixes a failure with what was being done, keeping its code.
absl::Status Context(const absl::Status& status, const std::string& what);
// The daemon itself as an audit actor (background jobs).
kms::audit::AuditActor InternalActor();
// kms::CompleteDestructions, logged: each receipt issued, each failure (by handle; never a name).
absl::Status CompleteDestructionsAndLog(kms::KeyManager& keys, storage::DataDb& data);

}  // namespace internal

struct Daemon::Parts {
  daemon::Config config;
  const Clock* clock = nullptr;  // DaemonOptions::clock
  // Observed from the first part on (the access-audit writer reports its batches to it); its
  // endpoint, when configured, serves from StartServing to the start of Stop.
  DaemonMetrics metrics{daemon::OperationTable::Default()};
  std::unique_ptr<MetricsEndpoint> metrics_endpoint;
  std::unique_ptr<hsm::HsmClient> hsm;
  std::unique_ptr<kms::HsmCheckpointSigner> checkpoint_signer;
  std::unique_ptr<kms::audit::SyslogAnchorSink> anchor_sink;
  std::unique_ptr<kms::audit::AuditLog> audit_log;
  std::unique_ptr<kms::audit::BatchingAuditWriter> access_audit;
  std::unique_ptr<kms::AuditPurgeJournal> purge_journal;
  std::unique_ptr<storage::DataDb> data_db;
  std::unique_ptr<kms::StoreGraph> store_graph;  // the key manager and the stores over data_db
  // Parts of `store_graph`, for short: set when it opens, cleared when it closes.
  kms::KeyManager* key_manager = nullptr;
  storage::RecordStore* records = nullptr;
  storage::AttachmentStore* attachments = nullptr;
  storage::RecycleBin* bin = nullptr;
  std::unique_ptr<kms::FullBackups> backups;
  // EVENT_DAMAGED_ITEM for what listings and jobs skip: made before the jobs (a resumed job may
  // meet damage), attached to the event log once that is open, detached before it closes.
  std::unique_ptr<daemon::DamagedItemEvents> damaged_events;
  std::unique_ptr<daemon::JobRegistry> jobs;
  std::unique_ptr<daemon::Authorizer> authorizer;
  std::unique_ptr<kms::admin::AdminRegistry> admin_registry;
  std::unique_ptr<daemon::AdminControl> admin_control;
  // Grants at run time (kms/ops/runtime_grants.h): over key_manager, authorizer, admin_registry.
  std::unique_ptr<daemon::RuntimeGrants> grants;
  std::unique_ptr<events::EventLog> event_log;
  std::unique_ptr<daemon::CanaryRegistry> canaries;
  std::unique_ptr<daemon::AccessAnomalies> anomalies;  // over event_log
  std::unique_ptr<events::EventSource> event_source;
  std::unique_ptr<events::HookDelivery> hook_delivery;
  std::unique_ptr<kms::dataset_export::ExportService> exports;
  std::unique_ptr<daemon::Services> services;
  std::unique_ptr<server::Server> server;
  // `server` for the status operation's workers, which may run before it is assigned.
  std::atomic<server::Server*> live_server{nullptr};
  bool stopped = false;
  // The key manager whose key-DB generation the audit log's checkpoints record
  // (AuditLogOptions::key_db_generation): set once it is open; before it closes, its final
  // generation is kept in closed_generation, for the log's closing checkpoint. The log reads
  // them under its own mutex, from any thread that appends (lock order: log, then this).
  std::mutex generation_mu;
  const kms::KeyManager* generation_source = nullptr;  // guarded by generation_mu
  uint64_t closed_generation = 0;                      // guarded by generation_mu

  uint64_t KeyDbGeneration();

  absl::Status OpenHsm();
  absl::Status OpenAudit();
  // The key manager's options every key manager of this daemon shares: the token, the audit
  // log, the default policy and the clock (OpenStores adds the key DB; a restore its target).
  kms::KeyManagerOptions KeyManagerBase() const;
  // DaemonOptions::restore_backup: restores backup `id` into the (empty) data and key-DB
  // directories, replaying the open audit log. Between OpenAudit and OpenStores.
  absl::Status RestoreFromBackup(uint32_t id, const std::string& backup_root);
  absl::Status OpenStores();
  absl::Status EnsureDatasets(const std::vector<std::string>& names);
  absl::Status StartJobs();
  // Starts the re-encryptions and re-indexes a stop or crash left unfinished (called by StartJobs).
  void ResumeUnfinishedJobs();
  absl::Status StartEvents();
  absl::Status StartServing();
  // Opens admin_registry and admin_control (called by StartServing).
  absl::Status OpenAdminControl();
  // The export service (dataset_export), called by StartServing.
  absl::Status OpenExports();
  // The metrics' sources, the metrics operation and, when configured, the endpoint.
  absl::Status StartMetrics(daemon::ServicesDeps& deps);
  // What the backup operations reach (called by StartServing).
  BackupOperationDeps BackupDeps(const std::string& audit_public_key_pem);
  absl::Status Stop();
};

}  // namespace coffer::cofferd

#endif  // COFFER_KMS_COFFERD_INTERNAL_DAEMON_PARTS_H_
