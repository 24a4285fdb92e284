// keyctl: the admin CLI for cofferd's admin socket (docs/keyctl.md). This file holds the command
// line (CLI11): every subcommand, its flags, help text and example; the work is in commands.cc.
//
// Exit codes: 0 success, 1 error, 2 usage, 3 refused (also MFA and approval refusals), 4 not
// found, 5 pending approval (the operation was filed for a second admin). Errors are one line on
// stderr ("keyctl: ..."); with --json, stdout also gets
// {"error": {"code", "code_name", "message"}}.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "kms/keyctl/commands.h"
#include "kms/keyctl/event_commands.h"
#include "kms/keyctl/export_commands.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {
namespace {

namespace pb = ::coffer::v1;

using Action = std::function<absl::Status(CommandContext&)>;

CLI::Validator DurationValidator() {
  return {[](std::string& text) -> std::string {
            auto parsed = ParseDuration(text);
            if (parsed.ok()) return {};
            return std::string(parsed.status().message());
          },
          "DURATION"};
}

CLI::Validator TimeValidator() {
  return {[](std::string& text) -> std::string {
            auto parsed = ParseTimePoint(text, NowMicros());
            if (parsed.ok()) return {};
            return std::string(parsed.status().message());
          },
          "TIME"};
}

const std::vector<std::string> kPurposes = {"records", "attachments", "lookup", "pseudonym"};

pb::Purpose PurposeFromName(const std::string& name) {
  if (name == "records") return pb::PURPOSE_RECORDS;
  if (name == "attachments") return pb::PURPOSE_ATTACHMENTS;
  if (name == "lookup") return pb::PURPOSE_LOOKUP;
  return pb::PURPOSE_PSEUDONYM;  // the validator admits only these four
}

// Policy flags shared by `dataset create` and `policy set`; Fill sets only the flags given.
struct PolicyFlags {
  int64_t rotation_days = 0;
  uint32_t bin_days = 0;
  uint64_t usage_limit = 0;
  std::string retention, min_retention, destruction_wait, auto_destroy;
  std::vector<CLI::Option*> options;

  void Add(CLI::App* app) {
    options.push_back(app->add_option("--rotation-days", rotation_days,
                                      "Rotate the records and attachments keys every N days")
                          ->check(CLI::Range(int64_t{1}, int64_t{36500})));
    options.push_back(
        app->add_option("--bin-days", bin_days, "Days a deleted item stays in the recycle bin"));
    options.push_back(app->add_option("--usage-limit", usage_limit,
                                      "Encryptions per key version before it rotates"));
    options.push_back(app->add_option("--retention", retention,
                                      "Maximum age of data, then purged (e.g. 365d; 0 = none)")
                          ->check(DurationValidator()));
    options.push_back(
        app->add_option("--min-retention", min_retention,
                        "Compliance lock: nothing is deleted or purged younger (0 = none)")
            ->check(DurationValidator()));
    options.push_back(app->add_option("--destruction-wait", destruction_wait,
                                      "Waiting period between scheduling and destruction")
                          ->check(DurationValidator()));
    options.push_back(
        app->add_option("--auto-destroy-after-disabled", auto_destroy,
                        "Schedule destruction of a dataset disabled this long (0 = never)")
            ->check(DurationValidator()));
  }
  bool AnyGiven() const {
    for (const CLI::Option* o : options) {
      if (o->count() > 0) return true;
    }
    return false;
  }
  pb::Policy Fill() const {
    pb::Policy policy;
    if (options[0]->count() > 0) {
      policy.set_records_rotation_seconds(rotation_days * 86400);
      policy.set_attachments_rotation_seconds(rotation_days * 86400);
    }
    if (options[1]->count() > 0) policy.set_bin_days(bin_days);
    if (options[2]->count() > 0) policy.set_usage_limit(usage_limit);
    // The validators accepted these; ParseDuration cannot fail on them here.
    if (options[3]->count() > 0) policy.set_retention_max_age_seconds(*ParseDuration(retention));
    if (options[4]->count() > 0) {
      policy.set_minimum_retention_seconds(*ParseDuration(min_retention));
    }
    if (options[5]->count() > 0) {
      policy.set_destruction_wait_seconds(*ParseDuration(destruction_wait));
    }
    if (options[6]->count() > 0) {
      policy.set_auto_destroy_after_disabled_seconds(*ParseDuration(auto_destroy));
    }
    return policy;
  }
};

// Every value the command line binds to; outlives parsing.
struct Values {
  std::string name;
  std::string dataset;
  PolicyFlags create_policy;
  PolicyFlags set_policy;
  std::vector<std::string> purposes;
  std::string purpose;
  bool emergency = false;
  uint32_t below = 0;
  std::string module;
  bool destroy_old = false;
  std::string record_id, attachment_name;
  uint32_t rate = 0;
  bool wait = false;
  uint64_t job_id = 0;
  uint32_t backup_id = 0;
  std::string directory;
  std::string since, until, caller_dataset;
  uint32_t caller_uid = 0;
  uint32_t limit = 100;
  uint32_t admin_uid = 0;
  uint64_t request_id = 0;
  bool all = false;
  bool hex = false;
  bool offline = false;
  std::string public_key, audit_dir = "./var/audit";
  std::string receipt_file, out_file;
  uint64_t handle = 0;
};

CLI::App* Sub(CLI::App* parent, const std::string& name, const std::string& description,
              const std::string& example) {
  CLI::App* app = parent->add_subcommand(name, description);
  app->footer("Example:\n  " + example);
  return app;
}

// The deepest subcommand the command line selected, for the usage hint.
const CLI::App* Deepest(const CLI::App* app) {
  for (const CLI::App* sub : app->get_subcommands()) return Deepest(sub);
  return app;
}
std::string CommandPath(const CLI::App* app) {
  std::string path = app->get_name();
  for (const CLI::App* sub : app->get_subcommands()) return path + " " + CommandPath(sub);
  return path;
}

void DefineDataset(CLI::App& app, Values& v, Action& action) {
  CLI::App* dataset = app.add_subcommand("dataset", "Create, list, describe and lock datasets");
  dataset->require_subcommand(1);
  dataset->footer("Example:\n  keyctl dataset list");

  CLI::App* create = Sub(dataset, "create", "Create a dataset (unset policies take defaults)",
                         "keyctl dataset create crm/contacts --bin-days 14 --retention 365d");
  create->add_option("NAME", v.name, "Dataset name: 1-128 of [a-z0-9._/-]")->required();
  v.create_policy.Add(create);
  create->callback([&] {
    action = [&](CommandContext& ctx) {
      return DatasetCreate(ctx, v.name, v.create_policy.Fill());
    };
  });

  CLI::App* list = Sub(dataset, "list", "List every dataset", "keyctl dataset list --json");
  list->callback([&] { action = [](CommandContext& ctx) { return DatasetList(ctx); }; });

  CLI::App* describe =
      Sub(dataset, "describe", "Show a dataset: state, policies, key versions and counts",
          "keyctl dataset describe crm/contacts");
  describe->add_option("NAME", v.name, "Dataset name")->required();
  describe->callback(
      [&] { action = [&](CommandContext& ctx) { return DatasetDescribe(ctx, v.name); }; });

  const struct {
    const char* name;
    const char* help;
    pb::DatasetLifecycleRequest::Action action;
  } lifecycle[] = {
      {"disable", "Lock a dataset: reads and writes refused until enabled",
       pb::DatasetLifecycleRequest::DISABLE},
      {"enable", "Unlock a disabled dataset", pb::DatasetLifecycleRequest::ENABLE},
      {"destroy", "Schedule destruction after the dataset's waiting period",
       pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION},
      {"cancel-destroy", "Cancel a scheduled destruction (the dataset stays disabled)",
       pb::DatasetLifecycleRequest::CANCEL_DESTRUCTION},
  };
  CLI::App* approve = Sub(dataset, "approve", "Approve a pending request (as: request approve)",
                          "keyctl dataset approve 12 --totp 123456");
  approve->add_option("ID", v.request_id, "Request id (keyctl request list)")->required();
  approve->callback([&] {
    action = [&](CommandContext& ctx) { return RequestDecide(ctx, v.request_id, true); };
  });

  for (const auto& entry : lifecycle) {
    CLI::App* sub = Sub(dataset, entry.name, entry.help,
                        std::string("keyctl dataset ") + entry.name + " crm/contacts");
    sub->add_option("NAME", v.name, "Dataset name")->required();
    pb::DatasetLifecycleRequest::Action what = entry.action;
    sub->callback([&v, &action, what] {
      action = [&v, what](CommandContext& ctx) { return DatasetLifecycle(ctx, v.name, what); };
    });
  }
}

// `dataset export` and `export open` (kms/keyctl/export_commands.h); after DefineDataset.
void DefineExport(CLI::App& app, Action& action) {
  static DatasetExportOptions export_options;
  static ExportOpenOptions open_options;
  CLI::App* dataset = app.get_subcommand("dataset");
  CLI::App* sub = Sub(dataset, "export",
                      "Export a DISABLED or PENDING_DESTRUCTION dataset to an archive for a "
                      "recipient key (dual control)",
                      "keyctl dataset export crm/contacts --recipient-key customer.pub.pem "
                      "--out contacts.cfx --totp 123456");
  sub->add_option("NAME", export_options.dataset, "Dataset name")->required();
  sub->add_option("--recipient-key", export_options.recipient_key_file,
                  "The recipient's PEM public key (RSA >= 2048 bits or X25519)")
      ->required();
  sub->add_option("--out", export_options.out_file, "Archive file to create (never overwritten)")
      ->required();
  sub->add_option("--approval", export_options.approval_id,
                  "Redeem this approved export request (keyctl request list)");
  sub->callback(
      [&] { action = [](CommandContext& ctx) { return DatasetExport(ctx, export_options); }; });

  CLI::App* exp = app.add_subcommand("export", "Open dataset export archives");
  exp->require_subcommand(1);
  CLI::App* open = Sub(exp, "open",
                       "Verify and decrypt an export archive into a directory (no daemon needed "
                       "with --public-key)",
                       "keyctl export open contacts.cfx --private-key customer.key.pem --out-dir "
                       "contacts --public-key audit-public-key.pem");
  open->add_option("FILE", open_options.archive_file, "The archive")->required();
  open->add_option("--private-key", open_options.private_key_file,
                   "The recipient's PEM private key")
      ->required();
  open->add_option("--out-dir", open_options.out_dir,
                   "Directory to create (or an empty one) for records and attachments")
      ->required();
  open->add_option("--public-key", open_options.public_key_file,
                   "The daemon's audit-public-key.pem (default: ask the running daemon)");
  open->callback(
      [&] { action = [](CommandContext& ctx) { return ExportOpen(ctx, open_options); }; });
}

void DefineKey(CLI::App& app, Values& v, Action& action) {
  CLI::App* key = app.add_subcommand("key", "Rotate, list, retire and re-wrap key versions");
  key->require_subcommand(1);
  key->footer("Example:\n  keyctl key versions crm/contacts");

  CLI::App* rotate = Sub(key, "rotate",
                         "Rotate primary key versions (default: records and "
                         "attachments)",
                         "keyctl key rotate crm/contacts --purpose records");
  rotate->add_option("DATASET", v.dataset, "Dataset name")->required();
  rotate->add_option("--purpose", v.purposes, "Purpose to rotate (repeatable)")
      ->check(CLI::IsMember(kPurposes));
  rotate->add_flag("--emergency", v.emergency,
                   "Rotate records and attachments and mark their older versions COMPROMISED");
  rotate->callback([&] {
    action = [&](CommandContext& ctx) {
      std::vector<pb::Purpose> purposes;
      for (const std::string& p : v.purposes) purposes.push_back(PurposeFromName(p));
      return KeyRotate(ctx, v.dataset, purposes, v.emergency);
    };
  });

  CLI::App* versions = Sub(key, "versions", "List a dataset's key versions",
                           "keyctl key versions crm/contacts --json");
  versions->add_option("DATASET", v.dataset, "Dataset name")->required();
  versions->callback(
      [&] { action = [&](CommandContext& ctx) { return KeyVersions(ctx, v.dataset); }; });

  CLI::App* retire =
      Sub(key, "retire", "Retire every version of a purpose below N (no data may remain under it)",
          "keyctl key retire crm/contacts --purpose records --below 3");
  retire->add_option("DATASET", v.dataset, "Dataset name")->required();
  retire->add_option("--purpose", v.purpose, "Purpose")
      ->required()
      ->check(CLI::IsMember(kPurposes));
  retire->add_option("--below", v.below, "Retire versions below this one")
      ->required()
      ->check(CLI::Range(uint32_t{1}, UINT32_MAX));
  retire->callback([&] {
    action = [&](CommandContext& ctx) {
      return KeyRetire(ctx, v.dataset, PurposeFromName(v.purpose), v.below);
    };
  });

  CLI::App* rewrap = Sub(key, "rewrap", "Re-wrap every key of a dataset under a new wrapping key",
                         "keyctl key rewrap crm/contacts --module backup-hsm --destroy-old");
  rewrap->add_option("DATASET", v.dataset, "Dataset name")->required();
  rewrap->add_option("--module", v.module, "Configured PKCS#11 module name (default: current)");
  rewrap->add_flag("--destroy-old", v.destroy_old, "Destroy the old wrapping keys afterwards");
  rewrap->callback([&] {
    action = [&](CommandContext& ctx) {
      return KeyRewrap(ctx, v.dataset, v.module, v.destroy_old);
    };
  });

  CLI::App* inventory =
      Sub(key, "inventory",
          "Every key the daemon holds: data keys, wrapping keys, audit and admin secrets",
          "keyctl key inventory --dataset crm/contacts --json");
  inventory->add_option("--dataset", v.dataset,
                        "Only this dataset (default: all, and service keys)");
  inventory->callback(
      [&] { action = [&](CommandContext& ctx) { return KeyInventory(ctx, v.dataset); }; });
}

void DefinePolicyHoldBin(CLI::App& app, Values& v, Action& action) {
  CLI::App* policy = app.add_subcommand("policy", "Change a dataset's policies");
  policy->require_subcommand(1);
  policy->footer("Example:\n  keyctl policy set crm/contacts --retention 730d");
  CLI::App* set = Sub(policy, "set", "Change the policies given; the others keep their values",
                      "keyctl policy set crm/contacts --rotation-days 30 --bin-days 7 "
                      "--destruction-wait 14d");
  set->add_option("DATASET", v.dataset, "Dataset name")->required();
  v.set_policy.Add(set);
  set->callback([&] {
    if (!v.set_policy.AnyGiven()) {
      throw CLI::ValidationError("policy set", "give at least one policy flag");
    }
    action = [&](CommandContext& ctx) { return PolicySet(ctx, v.dataset, v.set_policy.Fill()); };
  });

  CLI::App* hold = app.add_subcommand("hold", "Set or clear a dataset's legal hold");
  hold->require_subcommand(1);
  hold->footer("Example:\n  keyctl hold set crm/contacts");
  for (bool on : {true, false}) {
    CLI::App* sub =
        Sub(hold, on ? "set" : "clear",
            on ? "Set the legal hold: no purge, expiry or destruction" : "Clear the legal hold",
            std::string("keyctl hold ") + (on ? "set" : "clear") + " crm/contacts");
    sub->add_option("DATASET", v.dataset, "Dataset name")->required();
    sub->callback([&v, &action, on] {
      action = [&v, on](CommandContext& ctx) { return HoldSet(ctx, v.dataset, on); };
    });
  }

  CLI::App* bin = app.add_subcommand("bin", "Purge from a dataset's recycle bin");
  bin->require_subcommand(1);
  bin->footer("Example:\n  keyctl bin purge crm/contacts");
  CLI::App* purge =
      Sub(bin, "purge", "Purge one record or attachment physically, or empty the whole bin",
          "keyctl bin purge crm/contacts --record customer-42");
  purge->add_option("DATASET", v.dataset, "Dataset name")->required();
  CLI::Option* record = purge->add_option("--record", v.record_id, "Record id to purge");
  CLI::Option* attachment =
      purge->add_option("--attachment", v.attachment_name, "Attachment name to purge");
  record->excludes(attachment);
  purge->callback([&, record, attachment] {
    std::optional<std::string> r, a;
    if (record->count() > 0) r = v.record_id;
    if (attachment->count() > 0) a = v.attachment_name;
    action = [&v, r, a](CommandContext& ctx) { return BinPurge(ctx, v.dataset, r, a); };
  });

  CLI::App* list = Sub(bin, "list", "List a dataset's recycle bin (ids not printable: hex:...)",
                       "keyctl bin list crm/contacts --limit 50");
  list->add_option("DATASET", v.dataset, "Dataset name")->required();
  list->add_option("--limit", v.limit, "At most this many items (default 100)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{1000000}));
  list->callback(
      [&] { action = [&](CommandContext& ctx) { return BinList(ctx, v.dataset, v.limit); }; });

  CLI::App* restore = Sub(bin, "restore", "Restore one record or attachment from the recycle bin",
                          "keyctl bin restore crm/contacts --record customer-42");
  restore->add_option("DATASET", v.dataset, "Dataset name")->required();
  CLI::Option* restore_record = restore->add_option("--record", v.record_id, "Record id");
  CLI::Option* restore_attachment =
      restore->add_option("--attachment", v.attachment_name, "Attachment name");
  restore_record->excludes(restore_attachment);
  restore->add_flag("--hex", v.hex, "The id is hex (as bin list prints it, hex: prefix optional)");
  restore->callback([&, restore_record, restore_attachment] {
    if (restore_record->count() + restore_attachment->count() != 1) {
      throw CLI::ValidationError("bin restore", "give --record ID or --attachment NAME");
    }
    std::optional<std::string> r, a;
    if (restore_record->count() > 0) r = v.record_id;
    if (restore_attachment->count() > 0) a = v.attachment_name;
    action = [&v, r, a](CommandContext& ctx) { return BinRestore(ctx, v.dataset, r, a, v.hex); };
  });
}

void DefineJobs(CLI::App& app, Values& v, Action& action) {
  CLI::App* reencrypt =
      app.add_subcommand("reencrypt", "Move a dataset's data onto its primary key versions");
  reencrypt->require_subcommand(1);
  reencrypt->footer("Example:\n  keyctl reencrypt start crm/contacts --wait");
  CLI::App* start = Sub(reencrypt, "start", "Start a re-encryption job",
                        "keyctl reencrypt start crm/contacts --rate 500");
  start->add_option("DATASET", v.dataset, "Dataset name")->required();
  start->add_option("--rate", v.rate, "Items per second at most (default: unlimited)");
  start->add_flag("--wait", v.wait, "Follow the job to its end, showing progress");
  start->callback([&] {
    action = [&](CommandContext& ctx) {
      return JobStart(ctx, pb::JOB_REENCRYPT, v.dataset, v.rate, v.wait);
    };
  });
  CLI::App* status = Sub(reencrypt, "status", "Show one job, or every job the daemon knows",
                         "keyctl reencrypt status 7");
  status->add_option("ID", v.job_id, "Job id (default: every job)");
  status->callback([&] { action = [&](CommandContext& ctx) { return JobStatus(ctx, v.job_id); }; });
  CLI::App* wait =
      Sub(reencrypt, "wait", "Wait for a job (re-encryption or scrub) to end, showing rate and ETA",
          "keyctl reencrypt wait 7");
  wait->add_option("ID", v.job_id, "Job id")->required();
  wait->callback([&] { action = [&](CommandContext& ctx) { return JobWait(ctx, v.job_id); }; });

  CLI::App* scrub = Sub(&app, "scrub",
                        "Authenticate every record and segment (one dataset or all); changes "
                        "nothing",
                        "keyctl scrub crm/contacts --wait");
  scrub->add_option("DATASET", v.dataset, "Dataset name (default: every dataset)");
  scrub->add_flag("--wait", v.wait, "Follow the job to its end, showing progress");
  scrub->callback([&] {
    action = [&](CommandContext& ctx) {
      return JobStart(ctx, pb::JOB_SCRUB, v.dataset, 0, v.wait);
    };
  });
}

void DefineBackup(CLI::App& app, Values& v, Action& action) {
  CLI::App* backup =
      app.add_subcommand("backup", "Full backups: data DB, key DB and audit log together");
  backup->require_subcommand(1);
  backup->footer("Example:\n  keyctl backup create");
  Sub(backup, "create", "Make a full backup now", "keyctl backup create")->callback([&] {
    action = [](CommandContext& ctx) { return BackupCreate(ctx); };
  });
  Sub(backup, "list", "List the backups", "keyctl backup list --json")->callback([&] {
    action = [](CommandContext& ctx) { return BackupList(ctx); };
  });
  CLI::App* verify =
      Sub(backup, "verify", "Check a backup's files and checksums", "keyctl backup verify 3");
  verify->add_option("ID", v.backup_id, "Backup id")->required();
  verify->callback(
      [&] { action = [&](CommandContext& ctx) { return BackupVerify(ctx, v.backup_id); }; });
  CLI::App* restore =
      Sub(backup, "restore",
          "Restore a backup into a new or empty directory, replaying later purges and "
          "destructions",
          "keyctl backup restore 3 /srv/coffer-restored");
  restore->add_option("ID", v.backup_id, "Backup id")->required();
  restore->add_option("DIR", v.directory, "Target directory (absent or empty)")->required();
  restore->callback([&] {
    action = [&](CommandContext& ctx) { return BackupRestore(ctx, v.backup_id, v.directory); };
  });
  Sub(backup, "prune", "Delete backups beyond the configured retention", "keyctl backup prune")
      ->callback([&] { action = [](CommandContext& ctx) { return BackupPrune(ctx); }; });
}

void DefineAuditStatus(CLI::App& app, Values& v, Action& action) {
  CLI::App* audit = app.add_subcommand("audit", "Read and verify the audit log");
  audit->require_subcommand(1);
  audit->footer("Example:\n  keyctl audit search --dataset crm/contacts --since 7d");
  CLI::App* show = Sub(audit, "show", "Show the newest entries", "keyctl audit show --limit 50");
  show->add_option("--limit", v.limit, "How many entries (default 100)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{100000}));
  show->callback([&] { action = [&](CommandContext& ctx) { return AuditShow(ctx, v.limit); }; });

  CLI::App* search = Sub(audit, "search", "Find entries, oldest first",
                         "keyctl audit search --dataset crm/contacts --since 2026-01-01 "
                         "--caller 1000");
  search->add_option("--since", v.since, "From: YYYY-MM-DD[THH:MM[:SS]] local, or e.g. 7d ago")
      ->check(TimeValidator());
  search->add_option("--until", v.until, "Until: same forms as --since")->check(TimeValidator());
  search->add_option("--dataset", v.caller_dataset, "Only entries of this dataset");
  CLI::Option* caller = search->add_option("--caller", v.caller_uid, "Only this caller's uid");
  search->add_option("--limit", v.limit, "At most this many entries (default 100)")
      ->check(CLI::Range(uint32_t{1}, uint32_t{100000}));
  search->callback([&, caller] {
    AuditFilter filter;
    const int64_t now = NowMicros();
    if (!v.since.empty()) filter.since_micros = *ParseTimePoint(v.since, now);
    if (!v.until.empty()) filter.until_micros = *ParseTimePoint(v.until, now);
    filter.dataset = v.caller_dataset;
    if (caller->count() > 0) filter.caller_uid = v.caller_uid;
    filter.limit = v.limit;
    action = [filter](CommandContext& ctx) { return AuditSearch(ctx, filter); };
  });

  CLI::App* verify =
      Sub(audit, "verify",
          "Verify the hash chain, MACs and checkpoint signatures of the whole log (--offline: "
          "locally, without the daemon, with the checkpoint public key)",
          "keyctl audit verify --offline --public-key audit-public-key.pem --audit-dir "
          "/srv/coffer/audit");
  CLI::Option* offline =
      verify->add_flag("--offline", v.offline, "Verify the log directory here, without cofferd");
  CLI::Option* public_key =
      verify->add_option("--public-key", v.public_key, "Checkpoint public key (PEM), --offline");
  verify->add_option("--audit-dir", v.audit_dir, "Audit log directory (default ./var/audit)")
      ->needs(offline);
  public_key->needs(offline);
  verify->callback([&, offline, public_key] {
    if (offline->count() == 0) {
      action = [](CommandContext& ctx) { return AuditVerify(ctx); };
      return;
    }
    if (public_key->count() == 0) {
      throw CLI::ValidationError("audit verify", "--offline needs --public-key FILE");
    }
    action = [&](CommandContext& ctx) {
      return AuditVerifyOffline(ctx, v.public_key, v.audit_dir);
    };
  });

  Sub(&app, "status", "The daemon's version, sockets, counters and jobs", "keyctl status")
      ->callback([&] { action = [](CommandContext& ctx) { return DaemonStatus(ctx); }; });
}

void DefineReceipt(CLI::App& app, Values& v, Action& action) {
  CLI::App* receipt = app.add_subcommand(
      "receipt", "Fetch and verify a destroyed dataset's signed deletion receipt");
  receipt->require_subcommand(1);
  receipt->footer("Example:\n  keyctl receipt get crm/acme -o acme.receipt");

  CLI::App* get =
      Sub(receipt, "get", "Fetch the receipt of the destroyed dataset that had NAME (or --handle)",
          "keyctl receipt get crm/acme -o acme.receipt");
  CLI::Option* name = get->add_option("NAME", v.name, "The name the dataset had");
  CLI::Option* handle = get->add_option("--handle", v.handle, "The dataset's handle instead");
  name->excludes(handle);
  get->add_option("-o,--out", v.out_file, "Write the receipt file here (else print it)");
  get->callback([&, name, handle] {
    if (name->count() == 0 && handle->count() == 0) {
      throw CLI::ValidationError("receipt get", "name a dataset: NAME or --handle H");
    }
    std::optional<uint64_t> by_handle;
    if (handle->count() > 0) by_handle = v.handle;
    action = [&, by_handle](CommandContext& ctx) {
      return ReceiptGet(ctx, v.name, by_handle, v.out_file);
    };
  });

  CLI::App* verify = Sub(receipt, "verify",
                         "Verify a receipt file offline with the token's public key (no daemon)",
                         "keyctl receipt verify acme.receipt --public-key audit-public-key.pem "
                         "--name crm/acme");
  verify->add_option("FILE", v.receipt_file, "The receipt file")->required();
  verify
      ->add_option("--public-key", v.public_key,
                   "The token's public key (PEM): cofferd's audit-public-key.pem")
      ->required();
  verify->add_option("--name", v.name, "Also check that the receipt is for this dataset name");
  verify->callback([&] {
    action = [&](CommandContext& ctx) {
      return ReceiptVerify(ctx, v.receipt_file, v.public_key, v.name);
    };
  });
}

void DefineAdminRequest(CLI::App& app, Values& v, Action& action) {
  CLI::App* admin =
      app.add_subcommand("admin", "Enrol, list and remove admins (TOTP MFA, dual control)");
  admin->require_subcommand(1);
  admin->footer("Example:\n  keyctl admin list");
  CLI::App* enroll =
      Sub(admin, "enroll",
          "Without --uid: claim your own enrolment (prints the otpauth:// URI once). With --uid: "
          "invite that uid (dual control once two admins are enrolled)",
          "keyctl admin enroll --uid 1001 --totp 123456");
  CLI::Option* enroll_uid = enroll->add_option("--uid", v.admin_uid, "The uid to invite");
  enroll->callback([&, enroll_uid] {
    std::optional<uint32_t> uid;
    if (enroll_uid->count() > 0) uid = v.admin_uid;
    action = [uid](CommandContext& ctx) { return AdminEnroll(ctx, uid); };
  });
  Sub(admin, "list", "Admins, their codes and lock-outs, and open invitations",
      "keyctl admin list --json")
      ->callback([&] { action = [](CommandContext& ctx) { return AdminList(ctx); }; });
  CLI::App* remove =
      Sub(admin, "remove", "Remove an admin and destroy its TOTP secret (dual control)",
          "keyctl admin remove --uid 1001 --totp 123456");
  remove->add_option("--uid", v.admin_uid, "The admin's uid")->required();
  remove->callback(
      [&] { action = [&](CommandContext& ctx) { return AdminRemove(ctx, v.admin_uid); }; });

  CLI::App* request = app.add_subcommand("request", "Approval requests of dual control");
  request->require_subcommand(1);
  request->footer("Example:\n  keyctl request list");
  CLI::App* list = Sub(request, "list", "Pending approval requests (--all: also closed ones)",
                       "keyctl request list --all");
  list->add_flag("--all", v.all, "Also approved, denied, failed and expired requests");
  list->callback([&] { action = [&](CommandContext& ctx) { return RequestList(ctx, v.all); }; });
  for (bool approve : {true, false}) {
    CLI::App* sub =
        Sub(request, approve ? "approve" : "deny",
            approve ? "Approve another admin's request; it runs now (needs a fresh "
                      "code of yours)"
                    : "Deny another admin's request (needs a fresh code of yours)",
            std::string("keyctl request ") + (approve ? "approve" : "deny") + " 12 --totp 123456");
    sub->add_option("ID", v.request_id, "Request id (keyctl request list)")->required();
    sub->callback([&v, &action, approve] {
      action = [&v, approve](CommandContext& ctx) {
        return RequestDecide(ctx, v.request_id, approve);
      };
    });
  }
}

std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

int Run(int argc, char** argv) {
  CLI::App app{"keyctl: administer cofferd over its admin socket (docs/keyctl.md)", "keyctl"};
  app.fallthrough();
  app.require_subcommand(1);
  std::string socket = "./var/admin.sock";
  bool json = false;
  app.add_option("--socket", socket,
                 "cofferd's admin socket (default: $COFFER_ADMIN_SOCKET, else ./var/admin.sock)")
      ->envname("COFFER_ADMIN_SOCKET");
  app.add_flag("--json", json, "Print machine-readable JSON instead of tables");
  std::string totp;
  CLI::Option* totp_option = app.add_option(
      "--totp", totp, "Your current 6-digit TOTP code (opens an MFA session; single-use)");

  Values values;
  Action action;
  DefineDataset(app, values, action);
  DefineExport(app, action);
  DefineKey(app, values, action);
  DefinePolicyHoldBin(app, values, action);
  DefineJobs(app, values, action);
  DefineBackup(app, values, action);
  DefineAuditStatus(app, values, action);
  DefineAdminRequest(app, values, action);
  DefineReceipt(app, values, action);
  DefineEventCommands(app, action);
  app.footer(
      "Exit codes: 0 success, 1 error, 2 usage, 3 refused (incl. MFA), 4 not found, 5 pending "
      "approval.\n"
      "Example:\n  keyctl --socket /run/coffer/admin.sock dataset list");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // "keyctl frob" fails as a missing subcommand; name the word that is not one.
    // With fallthrough the word may have been handed up to a parent: look there too.
    const CLI::App* deepest = Deepest(&app);
    std::vector<std::string> unused;
    for (const CLI::App* a = deepest; a != nullptr && unused.empty(); a = a->get_parent()) {
      unused = a->remaining();
    }
    if (!unused.empty() && deepest->get_require_subcommand_min() > 0) {
      std::cerr << "keyctl: unknown command '" << unused.front() << "' (see: " << CommandPath(&app)
                << " --help)\n";
      return kExitUsage;
    }
    std::cerr << "keyctl: " << OneLine(e.what()) << " (see: " << CommandPath(&app) << " --help)\n";
    return kExitUsage;
  }
  if (!action) {
    std::cerr << "keyctl: no command given (see: keyctl --help)\n";
    return kExitUsage;
  }
  if (totp_option->count() > 0 && !IsTotpCode(totp)) {
    std::cerr << "keyctl: --totp takes exactly 6 digits: the current code of your "
                 "authenticator app\n";
    return kExitUsage;
  }

  CommandContext ctx(socket, json, std::cout, std::cerr, ::isatty(STDERR_FILENO) == 1);
  if (totp_option->count() > 0) ctx.set_totp_code(std::move(totp));
  absl::Status status = action(ctx);
  std::cout.flush();
  if (status.ok()) return kExitOk;
  // A request filed for approval was printed (stdout) by the command: exit 5.
  if (IsPendingApproval(status)) return ExitCodeFor(status);
  std::string message = OneLine(std::string(status.message()));
  std::cerr << "keyctl: " << message << '\n';
  if (json) {
    ErrorCode code = ErrorCodeOf(status);
    nlohmann::json error = {{"code", static_cast<int>(code)},
                            {"code_name", std::string(ErrorCodeName(code))},
                            {"message", message}};
    std::cout << nlohmann::json{{"error", std::move(error)}}.dump(2) << '\n';
  }
  return ExitCodeFor(status);
}

}  // namespace
}  // namespace coffer::keyctl

int main(int argc, char** argv) {
  try {
    return coffer::keyctl::Run(argc, argv);
  } catch (const std::exception& e) {
    // CLI11 throws while parsing (caught in Run); commands report failures as statuses.
    std::cerr << "keyctl: unexpected failure: " << e.what() << '\n';
  }
  return coffer::keyctl::kExitError;
}
