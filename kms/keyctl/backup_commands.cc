#include "kms/keyctl/backup_commands.h"

#include <CLI/CLI.hpp>
#include <string>
#include <utility>

#include "crypto/base/status.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

absl::Status BackupCreate(CommandContext& ctx) {
  pb::Request request;
  request.mutable_backup_create();
  COFFER_ASSIGN_OR_RETURN(pb::Response response,
                          ctx.CallWithProgress(std::move(request), "backup create"));
  const pb::BackupInfo& b = response.backup_create();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(b));
  } else {
    ctx.out() << "created backup " << b.id() << " (" << FormatBytes(b.size_bytes())
              << ", audit sequence " << b.audit_sequence() << ")\n";
  }
  return absl::OkStatus();
}

absl::Status BackupList(CommandContext& ctx) {
  pb::Request request;
  request.mutable_backup_list();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.backup_list()));
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"ID", "CREATED", "AGE", "SIZE", "AUDIT SEQ"});
  for (const pb::BackupInfo& b : response.backup_list().backups()) {
    table.AddRow({std::to_string(b.id()), FormatLocalTime(b.created_micros()),
                  FormatAge(b.created_micros(), now), FormatBytes(b.size_bytes()),
                  std::to_string(b.audit_sequence())});
  }
  if (table.rows() == 1) {
    ctx.out() << "no backups (make one with: keyctl backup create)\n";
  } else {
    table.Print(ctx.out());
  }
  return absl::OkStatus();
}

absl::Status BackupVerify(CommandContext& ctx, uint32_t id) {
  pb::Request request;
  request.mutable_backup_verify()->set_id(id);
  COFFER_RETURN_IF_ERROR(
      ctx.CallWithProgress(std::move(request), "backup verify " + std::to_string(id)).status());
  if (ctx.json()) {
    PrintJson(ctx, {{"id", id}, {"verified", true}});
  } else {
    ctx.out() << "backup " << id << " verified\n";
  }
  return absl::OkStatus();
}

absl::Status BackupRestore(CommandContext& ctx, uint32_t id, const std::string& target_directory) {
  pb::Request request;
  request.mutable_backup_restore()->set_id(id);
  request.mutable_backup_restore()->set_target_directory(target_directory);
  COFFER_ASSIGN_OR_RETURN(
      pb::Response response,
      ctx.CallWithProgress(std::move(request), "backup restore " + std::to_string(id)));
  const pb::BackupRestoreResponse& r = response.backup_restore();
  if (ctx.json()) {
    nlohmann::json json = ProtoToJson(r);
    json["id"] = id;
    json["target_directory"] = target_directory;
    json["restored"] = true;
    PrintJson(ctx, json);
    return absl::OkStatus();
  }
  ctx.out() << "restored backup " << id << " into " << target_directory
            << " (start a cofferd on that directory to serve it)\n"
            << "replayed from the live log after sequence " << r.audit_sequence() << ":\n"
            << "  purges: " << r.purges_replayed() << " (" << r.items_purged()
            << " items the backup held)\n"
            << "  deleted since, in the bin again: " << r.binned_again()
            << "; restored from the bin since: " << r.restored_from_bin()
            << "; moves of items the backup did not hold: " << r.moves_not_found() << "\n"
            << "  written since (newer values are in no log): records " << r.records_overwritten()
            << " overwritten, " << r.records_written_new() << " new; attachments "
            << r.attachments_overwritten() << " overwritten, " << r.attachments_written_new()
            << " new\n"
            << "  destructions: " << r.datasets_destroyed() << " replayed, "
            << r.destructions_deferred() << " left for the daemon that serves it\n";
  if (r.grants_added_since() + r.grants_removed_since() > 0) {
    ctx.out() << "  WARNING: grant changes since the backup are NOT replayed (the restored grants "
                 "are the backup's): "
              << r.grants_added_since() << " added, " << r.grants_removed_since()
              << " removed; check keyctl grant list on the restored daemon and redo them\n";
  }
  if (r.moves_without_ref() + r.writes_without_ref() > 0) {
    ctx.out() << "  logged by an older cofferd without item refs, not replayed: "
              << r.moves_without_ref() << " deletes/restores, " << r.writes_without_ref()
              << " writes\n";
  }
  return absl::OkStatus();
}

absl::Status BackupPrune(CommandContext& ctx) {
  pb::Request request;
  request.mutable_backup_prune();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.backup_prune()));
    return absl::OkStatus();
  }
  ctx.out() << "pruned " << response.backup_prune().deleted_size() << " backup(s)";
  for (uint32_t id : response.backup_prune().deleted()) ctx.out() << ' ' << id;
  ctx.out() << '\n';
  return absl::OkStatus();
}

void AddBackupCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    uint32_t backup_id = 0;
    std::string directory;
  };
  Values& v = line.NewValues<Values>();
  CLI::App* backup =
      AddCommandGroup(app, "backup", "Full backups: data DB, key DB and audit log together",
                      "keyctl backup create");
  line.Runs(AddCommand(backup, "create", "Make a full backup now", "keyctl backup create"),
            [](CommandContext& ctx) { return BackupCreate(ctx); });
  line.Runs(AddCommand(backup, "list", "List the backups", "keyctl backup list --json"),
            [](CommandContext& ctx) { return BackupList(ctx); });
  CLI::App* verify = AddCommand(backup, "verify", "Check a backup's files and checksums",
                                "keyctl backup verify 3");
  verify->add_option("ID", v.backup_id, "Backup id")->required();
  line.Runs(verify, [&v](CommandContext& ctx) { return BackupVerify(ctx, v.backup_id); });
  CLI::App* restore =
      AddCommand(backup, "restore",
                 "Restore a backup into a new directory the daemon creates (0700), replaying "
                 "later purges and destructions; the token is never changed",
                 "keyctl backup restore 3 /srv/coffer-restored");
  restore->add_option("ID", v.backup_id, "Backup id")->required();
  restore->add_option("DIR", v.directory, "Target directory: an absolute path that must not exist")
      ->required();
  line.Runs(restore,
            [&v](CommandContext& ctx) { return BackupRestore(ctx, v.backup_id, v.directory); });
  line.Runs(AddCommand(backup, "prune", "Delete backups beyond the configured retention",
                       "keyctl backup prune"),
            [](CommandContext& ctx) { return BackupPrune(ctx); });
}

}  // namespace coffer::keyctl
