// Golden rows of the key DB and the admin registry (tests/kms/keys/golden/): the stored format —
// column family names, row keys, serialised messages and their 32-byte tags — must not drift,
// or key DBs and registries written by earlier builds would no longer open.
//
// The golden files were written by the code that predates kms/keys/signed_row_store.h, with a
// software row authenticator under a fixed test key (bytes 0x00..0x1f; a stand-in for the
// token's row key, never a real secret). Three checks:
//  - the same operations today produce byte-identical (column family, key, value) triples;
//  - the golden rows, copied into a fresh RocksDB, verify and read back through KeyDb and
//    AdminRegistry;
//  - with one byte of each golden value flipped, every read is refused as KEY_DB_ROW_CORRUPT.
//
// COFFER_REGENERATE_GOLDEN=1 rewrites the files instead (by hand only, for a new row format).

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "hsm/service_keys.h"
#include "kms/admin/admin_registry.h"
#include "kms/admin/admin_registry.pb.h"
#include "kms/keys/key_db.h"
#include "kms/keys/key_db.pb.h"
#include "nlohmann/json.hpp"
#include "rocksdb/db.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/fixed_row_authenticator.h"
#include "tests/storage/storage_test_util.h"
#include "tests/testing/vectors.h"

namespace coffer::kms {
namespace {

namespace pb = ::coffer::kms::v1;
namespace admin_pb = ::coffer::admin::v1;
using ::coffer::kms::audit::testing::FakeClock;
using ::coffer::kms::audit::testing::TempDir;
using ::coffer::kms::testing::FixedRowAuthenticator;
using ::coffer::testing::BytesToHex;
using ::coffer::testing::HexToBytes;

// Holds no secret: TotpHmac answers the same bytes for every admin and step, so a code is
// never accepted by chance and the rows stay deterministic.
class FixedTotpStore final : public hsm::TotpTokenStore {
 public:
  absl::Status ImportTotpSecret(uint64_t, const crypto::SecretBytes&) override {
    return absl::OkStatus();
  }
  absl::StatusOr<std::array<uint8_t, 20>> TotpHmac(uint64_t, uint64_t) override {
    return std::array<uint8_t, 20>{};
  }
  absl::Status DestroyTotpSecret(uint64_t) override { return absl::OkStatus(); }
};

struct RawRow {
  std::string column_family;
  std::string key;
  std::string value;
};

// A RocksDB's content: its column families (name order) and every row.
struct RawDb {
  std::vector<std::string> column_families;
  std::vector<RawRow> rows;
};

// Every column family and row of the RocksDB in `dir`, rows in column family then key order.
RawDb DumpDb(const std::string& dir) {
  RawDb dump;
  std::vector<std::string>& names = dump.column_families;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names).ok());
  std::sort(names.begin(), names.end());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  EXPECT_TRUE(
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir, families, &handles, &raw).ok());
  if (raw == nullptr) return dump;
  std::unique_ptr<rocksdb::DB> db(raw);
  for (size_t i = 0; i < handles.size(); ++i) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[i]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      dump.rows.push_back({names[i], it->key().ToString(), it->value().ToString()});
    }
    EXPECT_TRUE(it->status().ok());
  }
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    EXPECT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
  }
  return dump;
}

// Creates a RocksDB in `dir` holding exactly `rows` (and the column families they name).
void WriteRows(const std::string& dir, const std::vector<RawRow>& rows) {
  std::vector<std::string> names = {rocksdb::kDefaultColumnFamilyName};
  for (const RawRow& row : rows) {
    if (std::find(names.begin(), names.end(), row.column_family) == names.end()) {
      names.push_back(row.column_family);
    }
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  rocksdb::DBOptions options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, dir, families, &handles, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  for (const RawRow& row : rows) {
    const size_t index = static_cast<size_t>(
        std::find(names.begin(), names.end(), row.column_family) - names.begin());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), handles[index], row.key, row.value).ok());
  }
  for (rocksdb::ColumnFamilyHandle* handle : handles) {
    ASSERT_TRUE(db->DestroyColumnFamilyHandle(handle).ok());
  }
}

std::string GoldenPath(const std::string& name) {
  return std::string(COFFER_SIGNED_ROWS_GOLDEN_DIR) + "/" + name;
}

RawDb LoadGolden(const std::string& name) {
  std::ifstream in(GoldenPath(name));
  EXPECT_TRUE(in) << "missing golden file " << name;
  RawDb golden_db;
  if (!in) return golden_db;
  const nlohmann::json golden = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(golden.is_object()) << name << " is not JSON";
  if (!golden.is_object()) return golden_db;
  golden_db.column_families = golden.at("column_families").get<std::vector<std::string>>();
  for (const nlohmann::json& row : golden.at("rows")) {
    golden_db.rows.push_back({row.at("column_family").get<std::string>(),
                              HexToBytes(row.at("key").get<std::string>()),
                              HexToBytes(row.at("value").get<std::string>())});
  }
  return golden_db;
}

void SaveGolden(const std::string& name, const std::string& about, const RawDb& dump) {
  nlohmann::json golden;
  golden["about"] = about;
  golden["column_families"] = dump.column_families;
  golden["rows"] = nlohmann::json::array();
  for (const RawRow& row : dump.rows) {
    golden["rows"].push_back({{"column_family", row.column_family},
                              {"key", BytesToHex(row.key)},
                              {"value", BytesToHex(row.value)}});
  }
  std::ofstream out(GoldenPath(name));
  out << golden.dump(2) << "\n";
  ASSERT_TRUE(out.good()) << "cannot write " << name;
}

bool Regenerating() {
  const char* flag = std::getenv("COFFER_REGENERATE_GOLDEN");
  return flag != nullptr && std::string(flag) == "1";
}

// Compares `dump` with the golden file `name`, or rewrites it when regenerating.
void ExpectGolden(const std::string& name, const std::string& about, const RawDb& dump) {
  if (Regenerating()) {
    SaveGolden(name, about, dump);
    GTEST_SKIP() << "rewrote " << name;
  }
  const RawDb golden_db = LoadGolden(name);
  EXPECT_EQ(dump.column_families, golden_db.column_families);
  const std::vector<RawRow>& rows = dump.rows;
  const std::vector<RawRow>& golden = golden_db.rows;
  ASSERT_EQ(rows.size(), golden.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].column_family, golden[i].column_family) << "row " << i;
    EXPECT_EQ(BytesToHex(rows[i].key), BytesToHex(golden[i].key)) << "row " << i;
    EXPECT_EQ(BytesToHex(rows[i].value), BytesToHex(golden[i].value)) << "row " << i;
  }
}

std::vector<RawRow> FlipOneByteOfEach(std::vector<RawRow> rows) {
  for (RawRow& row : rows) row.value[row.value.size() / 2] ^= 0x01;
  return rows;
}

// ---- The key DB ---------------------------------------------------------------------------

constexpr uint64_t kHandle = 7;
constexpr char kDatasetName[] = "golden-dataset";
constexpr char kKeyDbGolden[] = "key_db_rows.json";

pb::DatasetRow SampleDataset() {
  pb::DatasetRow row;
  row.set_handle(kHandle);
  row.set_name(kDatasetName);
  row.set_state(pb::ACTIVE);
  row.set_created_micros(1'800'000'000'000'000);
  row.set_state_changed_micros(1'800'000'000'000'000);
  row.mutable_policy()->set_records_rotation_seconds(86'400);
  row.mutable_policy()->set_usage_limit(1'000'000);
  row.mutable_policy()->set_bin_days(30);
  for (pb::Purpose purpose : {pb::RECORDS, pb::ATTACHMENTS}) {
    pb::PurposeState* state = row.add_purposes();
    state->set_purpose(purpose);
    state->set_primary_version(1);
    state->set_max_version(1);
    state->set_min_decrypt_version(1);
  }
  row.mutable_current_wrapping_key()->set_module("softhsm2");
  row.mutable_current_wrapping_key()->set_version(1);
  *row.add_live_wrapping_keys() = row.current_wrapping_key();
  return row;
}

pb::KeyVersionRow SampleVersion(pb::Purpose purpose) {
  pb::KeyVersionRow row;
  row.set_handle(kHandle);
  row.set_purpose(purpose);
  row.set_version(1);
  row.set_state(pb::PRIMARY);
  row.set_wrapped_key("opaque test bytes, not a wrapped key");
  row.set_module("softhsm2");
  row.set_created_micros(1'800'000'000'000'000);
  row.set_reserved_until(4096);
  return row;
}

pb::IntentRow SampleIntent() {
  pb::IntentRow row;
  row.set_kind(pb::INTENT_REWRAPPING);
  row.set_handle(kHandle);
  row.set_started_micros(1'800'000'000'000'001);
  row.mutable_actor()->set_uid(1001);
  row.mutable_old_wrapping_key()->set_module("softhsm2");
  row.mutable_old_wrapping_key()->set_version(1);
  return row;
}

pb::ClockRow SampleClock(int64_t micros) {
  pb::ClockRow row;
  row.set_high_water_micros(micros);
  return row;
}

// Two batches: every table written, then one row deleted and one replaced.
void WriteSampleKeyDb(const std::string& dir, hsm::RowAuthenticator& rows) {
  auto db = KeyDb::Open(dir, &rows);
  ASSERT_TRUE(db.ok()) << db.status();
  KeyDb::Batch first(**db);
  pb::NameRow name;
  name.set_handle(kHandle);
  ASSERT_TRUE(first.Put(KeyDbTable::kDatasets, DatasetRowKey(kHandle), SampleDataset()).ok());
  ASSERT_TRUE(first.Put(KeyDbTable::kNames, kDatasetName, name).ok());
  for (pb::Purpose purpose : {pb::RECORDS, pb::ATTACHMENTS}) {
    ASSERT_TRUE(first
                    .Put(KeyDbTable::kKeyVersions, KeyVersionRowKey(kHandle, purpose, 1),
                         SampleVersion(purpose))
                    .ok());
  }
  ASSERT_TRUE(first.Put(KeyDbTable::kIntents, DatasetRowKey(kHandle), SampleIntent()).ok());
  ASSERT_TRUE(first.Put(KeyDbTable::kIntents, DatasetRowKey(kHandle + 1), SampleIntent()).ok());
  ASSERT_TRUE(first.Put(KeyDbTable::kMeta, "clock", SampleClock(1'800'000'000'000'000)).ok());
  ASSERT_TRUE((*db)->Write(first).ok());
  KeyDb::Batch second(**db);
  second.Delete(KeyDbTable::kIntents, DatasetRowKey(kHandle + 1));
  ASSERT_TRUE(second.Put(KeyDbTable::kMeta, "clock", SampleClock(1'800'000'000'000'002)).ok());
  ASSERT_TRUE((*db)->Write(second).ok());
}

// The message type stored in `table`.
std::unique_ptr<google::protobuf::MessageLite> NewRow(KeyDbTable table) {
  switch (table) {
    case KeyDbTable::kDatasets:
      return std::make_unique<pb::DatasetRow>();
    case KeyDbTable::kNames:
      return std::make_unique<pb::NameRow>();
    case KeyDbTable::kKeyVersions:
      return std::make_unique<pb::KeyVersionRow>();
    case KeyDbTable::kIntents:
      return std::make_unique<pb::IntentRow>();
    case KeyDbTable::kMeta:
      return std::make_unique<pb::ClockRow>();
  }
  return nullptr;
}

KeyDbTable TableNamed(const std::string& name) {
  for (size_t i = 0; i < kKeyDbTableCount; ++i) {
    if (KeyDbTableName(static_cast<KeyDbTable>(i)) == name) return static_cast<KeyDbTable>(i);
  }
  ADD_FAILURE() << "no key DB table " << name;
  return KeyDbTable::kMeta;
}

// The meta row "generation" after the sample's two writes (docs/key-manager.md, "Key DB
// generation"): KeyDbGenerationRow{generation: 2} = 08 02, then HMAC-SHA256 under the fixed test
// key over "coffer-keydb-row-v1" 00 "meta" 00 | 00 00 00 0a | "generation" | 08 02. Added with
// generations; the golden file (written before) holds every other row, unchanged.
constexpr char kGenerationRowHex[] =
    "08025e223cecd263952d4a4957c4a472a6596156af20e0d043873ba2b3b41acd430c";

TEST(KeyDbGoldenTest, SameOperationsWriteTheGoldenRows) {
  TempDir dir;
  FixedRowAuthenticator rows;
  WriteSampleKeyDb(dir.Sub("keydb"), rows);
  RawDb dump = DumpDb(dir.Sub("keydb"));
  auto generation = std::find_if(dump.rows.begin(), dump.rows.end(), [](const RawRow& row) {
    return row.column_family == "meta" && row.key == "generation";
  });
  ASSERT_NE(generation, dump.rows.end()) << "every write carries the generation row";
  EXPECT_EQ(BytesToHex(generation->value), kGenerationRowHex);
  dump.rows.erase(generation);
  ExpectGolden(kKeyDbGolden, "key DB rows (tests/kms/keys/signed_rows_golden_test.cc)", dump);
}

TEST(KeyDbGoldenTest, GoldenRowsVerifyAndReadBack) {
  const std::vector<RawRow> golden = LoadGolden(kKeyDbGolden).rows;
  ASSERT_EQ(golden.size(), 6u);
  TempDir dir;
  WriteRows(dir.Sub("keydb"), golden);
  FixedRowAuthenticator rows;
  auto db = KeyDb::Open(dir.Sub("keydb"), &rows);
  ASSERT_TRUE(db.ok()) << db.status();
  for (const RawRow& row : golden) {
    const KeyDbTable table = TableNamed(row.column_family);
    std::unique_ptr<google::protobuf::MessageLite> message = NewRow(table);
    auto found = (*db)->Get(table, row.key, *message);
    ASSERT_TRUE(found.ok()) << row.column_family << ": " << found.status();
    EXPECT_TRUE(*found);
    EXPECT_EQ(message->SerializeAsString(), row.value.substr(0, row.value.size() - kKeyDbTagBytes));
  }
  pb::DatasetRow dataset;
  ASSERT_TRUE((*db)->Get(KeyDbTable::kDatasets, DatasetRowKey(kHandle), dataset).ok());
  EXPECT_EQ(dataset.name(), kDatasetName);
  EXPECT_EQ(dataset.purposes_size(), 2);
  std::vector<std::string> version_keys;
  ASSERT_TRUE((*db)
                  ->Scan(KeyDbTable::kKeyVersions, KeyVersionPrefix(kHandle),
                         [&](std::string_view key, std::string_view) {
                           version_keys.emplace_back(key);
                           return absl::OkStatus();
                         })
                  .ok());
  EXPECT_EQ(version_keys.size(), 2u);
}

TEST(KeyDbGoldenTest, FlippedGoldenRowsAreRefused) {
  const std::vector<RawRow> flipped = FlipOneByteOfEach(LoadGolden(kKeyDbGolden).rows);
  ASSERT_FALSE(flipped.empty());
  TempDir dir;
  WriteRows(dir.Sub("keydb"), flipped);
  FixedRowAuthenticator rows;
  auto db = KeyDb::Open(dir.Sub("keydb"), &rows);
  ASSERT_TRUE(db.ok()) << db.status();
  for (const RawRow& row : flipped) {
    const KeyDbTable table = TableNamed(row.column_family);
    std::unique_ptr<google::protobuf::MessageLite> message = NewRow(table);
    auto found = (*db)->Get(table, row.key, *message);
    EXPECT_EQ(ErrorCodeOf(found.status()), ErrorCode::kKeyDbRowCorrupt) << row.column_family;
    EXPECT_NE(found.status().message().find(row.column_family), std::string_view::npos)
        << found.status();
  }
}

// ---- The admin registry -------------------------------------------------------------------

constexpr char kAdminGolden[] = "admin_registry_rows.json";

std::unique_ptr<admin::AdminRegistry> OpenRegistry(const std::string& dir,
                                                   hsm::RowAuthenticator& rows,
                                                   hsm::TotpTokenStore& totp, const Clock& clock) {
  admin::AdminRegistry::Options options;
  options.directory = dir;
  options.totp = &totp;
  options.rows = &rows;
  options.clock = &clock;
  auto registry = admin::AdminRegistry::Open(std::move(options));
  EXPECT_TRUE(registry.ok()) << registry.status();
  return registry.ok() ? *std::move(registry) : nullptr;
}

// Invitations, an enrolment (consuming its invitation), a failed code, two approvals (one
// batch each with the id counter) and a decision.
void WriteSampleRegistry(admin::AdminRegistry& registry) {
  ASSERT_TRUE(registry.Invite(1001, 0, std::chrono::hours(1)).ok());
  ASSERT_TRUE(registry.Invite(1002, 1001, std::chrono::hours(1)).ok());
  ASSERT_TRUE(registry.Claim(1001, "alice", /*bootstrap=*/false).ok());
  EXPECT_EQ(ErrorCodeOf(registry.VerifyCode(1001, "12345x").status()), ErrorCode::kMfaCodeInvalid);
  ASSERT_TRUE(
      registry.CreateApproval(1001, "alice", "payload-1", "destroy", "ds", std::chrono::hours(1))
          .ok());
  ASSERT_TRUE(
      registry.CreateApproval(1001, "alice", "payload-2", "export", "ds", std::chrono::hours(2))
          .ok());
  ASSERT_TRUE(registry.Decide(1, 1002, "bob", /*approve=*/true).ok());
}

// Approval format 2 seals an approval's content (payload, summary, dataset) with a fresh nonce,
// so those rows cannot be byte-identical to the format-1 golden ones: they are compared with the
// content taken out of both (the rest of the message must match byte for byte, and the tag is
// checked by the store on every read), and the content is compared through the registry.
std::string ApprovalWithoutContent(const RawRow& row, bool expect_sealed) {
  admin_pb::ApprovalRow message;
  EXPECT_TRUE(message.ParseFromString(row.value.substr(0, row.value.size() - kKeyDbTagBytes)));
  EXPECT_EQ(!message.sealed_content().empty(), expect_sealed) << BytesToHex(row.key);
  if (expect_sealed) {
    EXPECT_TRUE(message.payload().empty() && message.summary().empty() &&
                message.dataset().empty());
  }
  message.clear_sealed_content();
  message.clear_payload();
  message.clear_summary();
  message.clear_dataset();
  return message.SerializeAsString();
}

TEST(AdminRegistryGoldenTest, SameOperationsWriteTheGoldenRows) {
  TempDir dir;
  FixedRowAuthenticator rows;
  FixedTotpStore totp;
  FakeClock clock;
  {
    auto registry = OpenRegistry(dir.Sub("admin"), rows, totp, clock);
    ASSERT_NE(registry, nullptr);
    WriteSampleRegistry(*registry);
    auto approvals = registry->ListApprovals(/*include_closed=*/true);
    ASSERT_TRUE(approvals.ok()) << approvals.status();
    ASSERT_EQ(approvals->size(), 2u);
    EXPECT_EQ((*approvals)[0].payload, "payload-1");
    EXPECT_EQ((*approvals)[0].summary, "destroy");
    EXPECT_EQ((*approvals)[1].dataset, "ds");
  }
  if (Regenerating()) GTEST_SKIP() << "approval format 2 rows are not golden (fresh nonces)";
  RawDb dump = DumpDb(dir.Sub("admin"));
  RawDb golden = LoadGolden(kAdminGolden);
  ASSERT_EQ(dump.rows.size(), golden.rows.size());
  size_t approvals = 0;
  for (size_t i = 0; i < dump.rows.size(); ++i) {
    if (!dump.rows[i].key.starts_with("approval/")) continue;
    ++approvals;
    EXPECT_EQ(BytesToHex(dump.rows[i].key), BytesToHex(golden.rows[i].key));
    EXPECT_EQ(BytesToHex(ApprovalWithoutContent(dump.rows[i], /*expect_sealed=*/true)),
              BytesToHex(ApprovalWithoutContent(golden.rows[i], /*expect_sealed=*/false)))
        << "row " << i;
    dump.rows[i] = golden.rows[i];  // compared above
  }
  EXPECT_EQ(approvals, 2u);
  ExpectGolden(kAdminGolden, "admin registry rows (tests/kms/keys/signed_rows_golden_test.cc)",
               dump);
}

TEST(AdminRegistryGoldenTest, GoldenRowsVerifyAndReadBack) {
  const std::vector<RawRow> golden = LoadGolden(kAdminGolden).rows;
  ASSERT_EQ(golden.size(), 5u);  // admin, invitation, two approvals, counter
  TempDir dir;
  WriteRows(dir.Sub("admin"), golden);
  FixedRowAuthenticator rows;
  FixedTotpStore totp;
  FakeClock clock;
  auto registry = OpenRegistry(dir.Sub("admin"), rows, totp, clock);
  ASSERT_NE(registry, nullptr);
  auto admins = registry->ListAdmins();
  ASSERT_TRUE(admins.ok()) << admins.status();
  ASSERT_EQ(admins->size(), 1u);
  EXPECT_EQ((*admins)[0].name, "alice");
  EXPECT_EQ((*admins)[0].failures, 1u);
  auto invitations = registry->ListInvitations();
  ASSERT_TRUE(invitations.ok()) << invitations.status();
  ASSERT_EQ(invitations->size(), 1u);
  EXPECT_EQ((*invitations)[0].invited_by, 1001u);
  auto approvals = registry->ListApprovals(/*include_closed=*/true);
  ASSERT_TRUE(approvals.ok()) << approvals.status();
  ASSERT_EQ(approvals->size(), 2u);
  EXPECT_EQ((*approvals)[0].state, admin::ApprovalState::kApproved);
  EXPECT_EQ((*approvals)[0].approver_name, "bob");
  EXPECT_EQ((*approvals)[1].payload, "payload-2");
  // The counter row reads back too: the next id follows the golden ones.
  auto third = registry->CreateApproval(1001, "alice", "p", "s", "ds", std::chrono::hours(1));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->id, 3u);
  // Opening sealed the format-1 approvals (one batch, then a compaction): their content is no
  // longer in the registry's files.
  registry.reset();
  EXPECT_TRUE(storage::testing::FilesContaining(dir.Sub("admin"), "payload-2").empty());
  for (const RawRow& row : DumpDb(dir.Sub("admin")).rows) {
    if (row.key.starts_with("approval/")) ApprovalWithoutContent(row, /*expect_sealed=*/true);
  }
}

TEST(AdminRegistryGoldenTest, FlippedGoldenRowsAreRefused) {
  const std::vector<RawRow> flipped = FlipOneByteOfEach(LoadGolden(kAdminGolden).rows);
  ASSERT_FALSE(flipped.empty());
  TempDir dir;
  WriteRows(dir.Sub("admin"), flipped);
  FixedRowAuthenticator rows;
  FixedTotpStore totp;
  FakeClock clock;
  auto registry = OpenRegistry(dir.Sub("admin"), rows, totp, clock);
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(ErrorCodeOf(registry->FindAdmin(1001).status()), ErrorCode::kKeyDbRowCorrupt);
  EXPECT_EQ(ErrorCodeOf(registry->HasInvitation(1002).status()), ErrorCode::kKeyDbRowCorrupt);
  EXPECT_EQ(ErrorCodeOf(registry->GetApproval(1).status()), ErrorCode::kKeyDbRowCorrupt);
  EXPECT_EQ(ErrorCodeOf(registry->GetApproval(2).status()), ErrorCode::kKeyDbRowCorrupt);
  EXPECT_EQ(
      ErrorCodeOf(
          registry->CreateApproval(1001, "alice", "p", "s", "ds", std::chrono::hours(1)).status()),
      ErrorCode::kKeyDbRowCorrupt);
}

}  // namespace
}  // namespace coffer::kms
