// The disaster-recovery drill (issue 19 item 7; scripts/dr-drill runs it larger). One machine
// runs test-cofferd, takes a full backup, and goes on: records overwritten, created, deleted to
// the bin, restored from it, purged; an attachment deleted and one replaced; a dataset shredded.
// Then the machine is lost. What travels to a new machine: the backup directory, a copy of the
// token directory made at backup time, and a copy of the audit log (which leaves the machine
// like the anchors do). The new machine's cofferd starts with --restore-backup on an empty
// state directory, and the test checks on it, over its sockets:
//  - every record that existed at backup time and was not deleted or purged since reads back
//    with its backup-time value, an overwritten one included (its newer value is in no log);
//  - records deleted to the bin after the backup are in the bin again (not back live), with
//    their values restorable; a record restored from the bin after the backup is live; a
//    record deleted before the backup and restored after it is live;
//  - purged records and attachments are gone, live and binned;
//  - the shredded dataset stays unreadable and ends DESTROYED;
//  - the restore reports exactly how many records and attachments were overwritten or created
//    after the backup, and how many deletes it put back in the bin;
//  - the audit log, continued on the new machine, verifies.
// COFFER_DR_RECORDS sets how many records the dataset holds (default 40).

#include <pwd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/testing/process.h"
#include "tests/testing/text.h"

namespace coffer {
namespace {

using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;
using ::coffer::testing::Pattern;
using ::coffer::testing::RunShell;

constexpr char kContacts[] = "crm/contacts";
constexpr char kShred[] = "crm/shred";

size_t RecordCount() {
  const char* text = std::getenv("COFFER_DR_RECORDS");
  const size_t count = text == nullptr ? 40 : std::strtoul(text, nullptr, 10);
  return count < 20 ? 20 : count;
}

std::string Id(size_t i) { return "contact-" + std::to_string(i); }
std::string Value(size_t i, uint32_t generation) {
  return Pattern(64 + i % 200, static_cast<uint32_t>(i) * 7 + generation);
}

std::string Joined(const KeyctlResult& r) { return r.out + "\n" + r.err; }

// The number after "NAME: " in the restore's log line (protobuf's short text omits zeros).
uint64_t Reported(const std::string& logs, const std::string& name) {
  std::smatch match;
  if (!std::regex_search(logs, match, std::regex("[ {]" + name + ": ([0-9]+)"))) return 0;
  return std::stoull(match[1].str());
}

// The ids keyctl bin list shows for `dataset`.
std::set<std::string> BinIds(const std::string& admin_socket, const std::string& dataset) {
  KeyctlResult listed = Keyctl(admin_socket, "--json bin list " + dataset + " --limit 1000");
  EXPECT_EQ(listed.exit_code, 0) << Joined(listed);
  std::set<std::string> ids;
  for (const nlohmann::json& item : listed.JsonOrEmpty().value("items", nlohmann::json::array())) {
    ids.insert(item.value("id_text", ""));
  }
  return ids;
}

TEST(DisasterRecoveryDrillTest, ANewMachineServesTheBackupAndKeepsEverythingTheLogSaysSince) {
  const size_t n = RecordCount();
  const size_t k = std::max<size_t>(3, n / 20);
  CofferdOptions old_options;
  old_options.name = "dr-old";
  std::unique_ptr<Cofferd> old_machine = Cofferd::Create(std::move(old_options));
  ASSERT_NE(old_machine, nullptr);
  auto admin = [&](const std::string& args) {
    KeyctlResult r = Keyctl(old_machine->admin_socket(), args);
    EXPECT_EQ(r.exit_code, 0) << args << ": " << Joined(r);
    return r;
  };
  admin(std::string("dataset create ") + kContacts);
  admin(std::string("dataset create ") + kShred + " --destruction-wait 1s");

  auto client = client::Client::Connect(old_machine->data_socket());
  ASSERT_TRUE(client.ok()) << client.status();
  client::Client& c = **client;
  for (size_t i = 0; i < n; ++i) ASSERT_TRUE(c.PutRecord(kContacts, Id(i), Value(i, 0)).ok());
  for (size_t i = 0; i < 5; ++i) ASSERT_TRUE(c.PutRecord(kShred, Id(i), Value(i, 9)).ok());
  auto put_attachment = [&](const std::string& name, const std::string& body) {
    auto writer = c.BeginAttachment(kContacts, name, "application/octet-stream");
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(body).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  };
  put_attachment("scan-0.pdf", Pattern(300000, 1));
  put_attachment("scan-1.pdf", Pattern(200000, 2));
  put_attachment("scan-2.pdf", Pattern(100000, 3));
  // In the bin at backup time: one stays there, one is restored after the backup.
  ASSERT_TRUE(c.DeleteRecord(kContacts, Id(n - 1)).ok());
  ASSERT_TRUE(c.DeleteRecord(kContacts, Id(n - 2)).ok());

  KeyctlResult backup = admin("--json backup create");
  const uint64_t backup_id = backup.JsonOrEmpty().value("id", uint64_t{0});
  ASSERT_NE(backup_id, 0u) << backup.out;
  // The token's copy, kept apart (an HSM backup, in effect).
  const std::string carried = old_machine->dir() + ".carried";
  ASSERT_EQ(RunShell("mkdir -p " + carried + " && cp -a " + old_machine->dir() + "/hsm " + carried +
                     "/hsm"),
            0);

  // After the backup, on k = n/20 (at least 3) records each: overwritten [0, k) (one twice),
  // k created, deleted [k, 2k+2) — of which k is purged next and 2k+1 restored —, 2k+2 purged
  // live, n-2 (binned before the backup) restored.
  for (size_t i = 0; i < k; ++i) {
    ASSERT_TRUE(c.PutRecord(kContacts, Id(i), Value(i, 1)).ok());
    ASSERT_TRUE(c.PutRecord(kContacts, "new-" + std::to_string(i), "after the backup").ok());
  }
  ASSERT_TRUE(c.PutRecord(kContacts, Id(1), Value(1, 2)).ok());  // twice: still one record
  for (size_t i = k; i < 2 * k + 2; ++i) ASSERT_TRUE(c.DeleteRecord(kContacts, Id(i)).ok());
  ASSERT_TRUE(c.RestoreRecord(kContacts, Id(2 * k + 1)).ok());  // deleted, then restored
  ASSERT_TRUE(c.RestoreRecord(kContacts, Id(n - 2)).ok());      // binned before, restored after
  admin(std::string("bin purge ") + kContacts + " --record " + Id(k));  // deleted, then purged
  admin(std::string("bin purge ") + kContacts + " --record " + Id(2 * k + 2));  // live, purged
  ASSERT_TRUE(c.DeleteAttachment(kContacts, "scan-0.pdf").ok());
  put_attachment("scan-1.pdf", Pattern(50000, 4));  // replaced
  admin(std::string("bin purge ") + kContacts + " --attachment scan-2.pdf");
  admin(std::string("dataset disable ") + kShred);
  admin(std::string("dataset destroy ") + kShred);
  KeyctlResult ran = old_machine->RunJobAfter(std::chrono::seconds(2), "rotation");
  ASSERT_EQ(ran.exit_code, 0) << Joined(ran);
  admin(std::string("receipt get ") + kShred);  // the destruction completed
  client->reset();

  // The machine is lost; its backups and audit log travel, then everything else is gone.
  ASSERT_TRUE(old_machine->Stop()) << old_machine->Logs();
  ASSERT_EQ(RunShell("cp -a " + old_machine->dir() + "/audit " + carried + "/audit && cp -a " +
                     old_machine->dir() + "/backups " + carried + "/backups"),
            0);
  const std::string old_logs = old_machine->Logs();
  old_machine.reset();  // removes its directory

  CofferdOptions new_options;
  new_options.name = "dr-new";
  new_options.start = false;
  std::unique_ptr<Cofferd> machine = Cofferd::Create(std::move(new_options));
  ASSERT_NE(machine, nullptr);
  const std::string dir = machine->dir();
  // The carried token replaces the one the harness made (its softhsm2.conf names this
  // directory's tokens/), with its PIN file; the audit log and the backups go where the
  // configuration expects them.
  ASSERT_EQ(RunShell("rm -rf " + dir + "/hsm/tokens && cp -a " + carried + "/hsm/tokens " + dir +
                     "/hsm/tokens && cp " + carried + "/hsm/user.pin " + dir +
                     "/hsm/user.pin && cp -a " + carried + "/audit " + dir + "/audit && cp -a " +
                     carried + "/backups " + dir + "/backups && rm -rf " + carried),
            0);
  if (machine->as_root()) {
    passwd* nobody = getpwnam("nobody");
    ASSERT_NE(nobody, nullptr);
    ASSERT_EQ(RunShell("chown -R " + std::to_string(nobody->pw_uid) + ":" +
                       std::to_string(machine->daemon_gid()) + " " + dir),
              0);
  }
  const auto restore_began = std::chrono::steady_clock::now();
  ASSERT_TRUE(machine->Start({"--restore-backup", std::to_string(backup_id)})) << "old machine:\n"
                                                                               << old_logs;
  const auto restore_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - restore_began)
                              .count();
  const std::string logs = machine->Logs();
  ASSERT_NE(logs.find("restore: backup " + std::to_string(backup_id) + " restored"),
            std::string::npos)
      << logs;
  EXPECT_EQ(Reported(logs, "records_overwritten"), k) << logs;
  EXPECT_EQ(Reported(logs, "records_written_new"), k) << logs;
  EXPECT_EQ(Reported(logs, "attachments_overwritten"), 1u) << logs;
  EXPECT_EQ(Reported(logs, "attachments_written_new"), 0u) << logs;
  // Deletes of k+1 .. 2k+1 and scan-0.pdf; k's delete finds it purged.
  EXPECT_EQ(Reported(logs, "binned_again"), k + 2) << logs;
  EXPECT_EQ(Reported(logs, "restored_from_bin"), 2u) << logs;
  EXPECT_EQ(Reported(logs, "moves_not_found"), 1u) << logs;
  EXPECT_EQ(Reported(logs, "moves_without_ref"), 0u) << logs;
  EXPECT_EQ(Reported(logs, "writes_without_ref"), 0u) << logs;
  // The carried token still holds the shredded dataset's wrapping key (copied before the
  // destruction), so the restore leaves it DESTROYING and the new machine finishes it.
  EXPECT_EQ(Reported(logs, "datasets_destroyed") + Reported(logs, "destructions_deferred"), 1u)
      << logs;

  auto restored = client::Client::Connect(machine->data_socket());
  ASSERT_TRUE(restored.ok()) << restored.status();
  client::Client& r = **restored;
  size_t served = 0;
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<std::string> got = r.GetRecord(kContacts, Id(i));
    const bool gone = (i >= k && i <= 2 * k) || i == 2 * k + 2 || i == n - 1;
    if (gone) {
      EXPECT_EQ(ErrorCodeOf(got.status()), ErrorCode::kRecordNotFound) << Id(i);
      continue;
    }
    ASSERT_TRUE(got.ok()) << Id(i) << ": " << got.status();
    EXPECT_EQ(*got, Value(i, 0)) << Id(i) << " is not its backup-time value";
    ++served;
  }
  EXPECT_EQ(served, n - k - 3);
  // scripts/dr-drill prints this line.
  std::cout << "dr drill: " << n << " records at backup time, " << served
            << " served as of the backup, bin as the log left it: "
            << Reported(logs, "binned_again") << " deletes replayed, "
            << Reported(logs, "restored_from_bin") << " restores replayed; overwritten after the "
            << "backup: " << Reported(logs, "records_overwritten") << " records, "
            << Reported(logs, "attachments_overwritten")
            << " attachments; created after it: " << Reported(logs, "records_written_new")
            << " records; purges replayed: " << Reported(logs, "purges_replayed")
            << "; restore to serving " << restore_ms << " ms" << std::endl;
  for (size_t i = 0; i < k; ++i) {
    const std::string id = "new-" + std::to_string(i);
    EXPECT_EQ(ErrorCodeOf(r.GetRecord(kContacts, id).status()), ErrorCode::kRecordNotFound) << id;
  }
  // The bin as the log left it: k+1 .. 2k (deleted after the backup), the one deleted before
  // and never restored, and scan-0.pdf; not k or 2k+2 (purged) and not 2k+1 (restored).
  std::set<std::string> expected_bin = {Id(n - 1), "scan-0.pdf"};
  for (size_t i = k + 1; i <= 2 * k; ++i) expected_bin.insert(Id(i));
  EXPECT_EQ(BinIds(machine->admin_socket(), kContacts), expected_bin);
  ASSERT_TRUE(r.RestoreRecord(kContacts, Id(k + 1)).ok());
  absl::StatusOr<std::string> back = r.GetRecord(kContacts, Id(k + 1));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, Value(k + 1, 0));
  EXPECT_EQ(ErrorCodeOf(r.RestoreRecord(kContacts, Id(k))), ErrorCode::kNotInRecycleBin);

  EXPECT_EQ(ErrorCodeOf(r.AttachmentMetadata(kContacts, "scan-0.pdf").status()),
            ErrorCode::kAttachmentNotFound);
  ASSERT_TRUE(r.RestoreAttachment(kContacts, "scan-0.pdf").ok());
  for (const auto& [name, body] : std::map<std::string, std::string>{
           {"scan-0.pdf", Pattern(300000, 1)}, {"scan-1.pdf", Pattern(200000, 2)}}) {
    auto reader = r.OpenAttachment(kContacts, name);
    ASSERT_TRUE(reader.ok()) << name << ": " << reader.status();
    absl::StatusOr<std::string> read = (*reader)->ReadAll();
    ASSERT_TRUE(read.ok()) << name << ": " << read.status();
    EXPECT_EQ(*read, body) << name;
  }
  EXPECT_EQ(ErrorCodeOf(r.AttachmentMetadata(kContacts, "scan-2.pdf").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(ErrorCodeOf(r.RestoreAttachment(kContacts, "scan-2.pdf")), ErrorCode::kNotInRecycleBin);

  // The shredded dataset: unreadable, its destruction finished here (the carried token's copy
  // of its wrapping key destroyed too), with its deletion receipt.
  for (size_t i = 0; i < 5; ++i) EXPECT_FALSE(r.GetRecord(kShred, Id(i)).ok()) << Id(i);
  EXPECT_NE(logs.find("destruction completed"), std::string::npos) << logs;
  KeyctlResult shred =
      Keyctl(machine->admin_socket(), std::string("--json dataset describe ") + kShred);
  EXPECT_EQ(shred.CodeName(), "DATASET_NOT_FOUND") << Joined(shred);
  KeyctlResult receipt = Keyctl(machine->admin_socket(), std::string("receipt get ") + kShred);
  EXPECT_EQ(receipt.exit_code, 0) << Joined(receipt);

  // The log the old machine began, continued here, verifies.
  KeyctlResult verified = Keyctl(machine->admin_socket(), "audit verify");
  EXPECT_EQ(verified.exit_code, 0) << Joined(verified);
  restored->reset();

  // Started again without the flag, it serves the same state; with it, it refuses.
  ASSERT_TRUE(machine->Stop()) << machine->Logs();
  auto [code, again] =
      machine->RunToExit({machine->UserArg(), "--restore-backup", std::to_string(backup_id)});
  EXPECT_EQ(code, 1) << again;
  EXPECT_NE(again.find("RESTORE_TARGET_NOT_EMPTY"), std::string::npos) << again;
  ASSERT_TRUE(machine->Start()) << machine->Logs();
  auto later = client::Client::Connect(machine->data_socket());
  ASSERT_TRUE(later.ok()) << later.status();
  absl::StatusOr<std::string> still = (*later)->GetRecord(kContacts, Id(n - 3));
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(*still, Value(n - 3, 0));
}

}  // namespace
}  // namespace coffer
