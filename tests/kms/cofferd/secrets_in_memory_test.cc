// Issue 19 item 5, secrets in memory: what a running, unprivileged test-cofferd leaves in its
// memory, read by this test as root through /proc/PID/mem (tests/testing/process_memory.h).
//
// The data keys' bytes are learnt the way an attacker holding the token would: a child process,
// as the daemon's user, opens the same SoftHSM2 token with its user PIN, reads the wrapped keys
// from a full backup's key-DB copy (kms::KeyDb, every row's tag checked) and unwraps them with
// the token's own C_UnwrapKey (hsm::DatasetWrappingKeys). No hook in the daemon is involved.
//
// Each scan has a positive control in the same scan — a key that must be found, because it is
// cached — so a scanner that silently read nothing would fail the test instead of passing it.
// Checked: keys made at creation and never used leave no copy; a destroyed dataset's keys leave
// no copy; keys evicted from the cache by its time-to-live leave no copy; the record values of
// finished requests (docs/threat-model.md, "Secrets in memory", says what is wiped when).
// Core dumps and the locked secure heap: kms_daemon_test's RunsUnprivilegedWithoutCoreDumps.
//
// Nothing secret is printed: failures name the dataset, purpose and version of a key, or the
// index of a value, and the mappings where it was found — never bytes.

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "hsm/hsm_client.h"
#include "hsm/key_wrapper.h"
#include "kms/client/client.h"
#include "kms/keys/full_backup.h"
#include "kms/keys/key_cache.h"
#include "kms/keys/key_db.h"
#include "kms/keys/key_db.pb.h"
#include "storage/data_key.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/one_dataset_daemon.h"
#include "tests/testing/process_memory.h"

namespace coffer {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::JsonNumber;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;
using storage::KeyPurpose;

constexpr std::array<KeyPurpose, 4> kPurposes = {KeyPurpose::kRecords, KeyPurpose::kAttachments,
                                                 KeyPurpose::kLookup, KeyPurpose::kPseudonym};

// One data key version as the token unwrapped it.
struct LearntKey {
  uint64_t handle = 0;
  KeyPurpose purpose = KeyPurpose::kRecords;
  uint32_t version = 0;
  std::string bytes;  // 32 bytes; never printed
};

// Secrets are searched by 16-byte fragments, not whole: freeing a heap chunk overwrites its first
// 16 bytes with the allocator's list pointers, so a whole-key search would miss a key left in
// freed memory. 16 random bytes (keys) or 16 random hex digits (values) match nothing by chance.
constexpr size_t kFragmentBytes = 16;
// Record values: this prefix and 64 random hex digits (four fragments).
constexpr std::string_view kValuePrefix = "secret-value-";

// The child's answer: 'E' and a message, or 'K' and per key handle (8) | purpose (1) |
// version (4) | key (32), integers little-endian.
constexpr size_t kRecordBytes = 8 + 1 + 4 + hsm::kDekBytes;

void AppendInteger(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t ReadInteger(const std::string& in, size_t at, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) {
    value = (value << 8) | static_cast<uint8_t>(in[at + static_cast<size_t>(i)]);
  }
  return value;
}

// Runs in the child, as the daemon's user: every key version of `handles` in the key-DB copy of
// full backup `id`, unwrapped through the token of the daemon's directory `dir`.
std::string UnwrapInChild(const std::string& dir, uint32_t id,
                          const std::vector<uint64_t>& handles) {
  setenv("SOFTHSM2_CONF", (dir + "/hsm/softhsm2.conf").c_str(), 1);
  hsm::HsmOptions options;
  options.token_label = "coffer";
  options.pin = hsm::PinSource::FromFile(dir + "/hsm/user.pin");
  auto token = hsm::HsmClient::Open(options);
  if (!token.ok()) return "Eopening the token: " + std::string(token.status().message());
  // The backup's key-DB copy is sealed under a key the token derives: open it into a directory
  // of the child's own (KeyDb::Open writes to its directory; the backup stays as it was).
  const std::string copy = dir + "/secrets-test-key-db";
  std::error_code error;
  absl::Status extracted =
      kms::FullBackups::ExtractKeyDb(dir + "/backups", id, (*token)->row_authenticator(), copy);
  if (!extracted.ok()) return "Eopening the backup's key DB: " + std::string(extracted.message());
  std::string out = "K";
  absl::Status status;
  {
    auto db = kms::KeyDb::Open(copy, &(*token)->row_authenticator());
    if (!db.ok()) return "Eopening the key DB copy: " + std::string(db.status().message());
    for (uint64_t handle : handles) {
      status =
          (*db)->Scan(kms::KeyDbTable::kKeyVersions, kms::KeyVersionPrefix(handle),
                      [&](std::string_view, std::string_view message) -> absl::Status {
                        kms::v1::KeyVersionRow row;
                        if (!row.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
                          return absl::DataLossError("a key version row does not parse");
                        }
                        auto blob = hsm::WrappedKey::Parse(row.wrapped_key());
                        if (!blob.ok()) return blob.status();
                        auto dek = (*token)->wrapping_keys().Unwrap(*blob);
                        if (!dek.ok()) return dek.status();
                        AppendInteger(out, row.handle(), 8);
                        AppendInteger(out, static_cast<uint64_t>(row.purpose()), 1);
                        AppendInteger(out, row.version(), 4);
                        out.append(reinterpret_cast<const char*>(dek->data()), dek->size());
                        return absl::OkStatus();
                      });
      if (!status.ok()) break;
    }
  }
  fs::remove_all(copy, error);
  (void)(*token)->Close();
  if (!status.ok()) {
    OPENSSL_cleanse(out.data(), out.size());
    return "Eunwrapping: " + std::string(status.message());
  }
  return out;
}

// The parameter is the access audit's crash-loss window: 0 runs data requests on the workers,
// 50 ms on the reactor (kms/ops/operation_table.h, Runs); both must leave no copy behind.
class SecretsInMemoryTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "reading the daemon's memory through /proc/PID/mem needs root "
                      "(CAP_SYS_PTRACE: the daemon is another uid and not dumpable); "
                      "run this suite as root, as CI does";
    }
    CofferdOptions options;
    options.name = "cofferd-secrets";
    const std::string window =
        "access_audit { crash_loss_window_millis: " + std::to_string(GetParam()) + " }\n";
    options.extra_config = [window](const std::string&) { return window; };
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr);
  }

  void TearDown() override {
    for (LearntKey& key : keys_) OPENSSL_cleanse(key.bytes.data(), key.bytes.size());
    for (std::string& value : values_) OPENSSL_cleanse(value.data(), value.size());
    if (HasFailure() && daemon_) std::cerr << "cofferd's log:\n" << daemon_->Logs();
  }

  KeyctlResult Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }

  uint64_t CreateDataset(const std::string& name) {
    KeyctlResult created = Run("dataset create " + name + " --destruction-wait 1s");
    EXPECT_EQ(created.exit_code, 0) << created.err;
    KeyctlResult described = Run("dataset describe " + name + " --json");
    EXPECT_EQ(described.exit_code, 0) << described.err;
    const uint64_t handle = JsonNumber(described.JsonOrEmpty().value("handle", nlohmann::json(0)));
    names_[handle] = name;
    return handle;
  }

  // A fresh value nobody could find by chance: kValuePrefix and 32 random bytes in hex.
  std::string NewValue() {
    std::array<unsigned char, 32> random{};
    EXPECT_EQ(RAND_bytes(random.data(), static_cast<int>(random.size())), 1);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string value(kValuePrefix);
    for (unsigned char c : random) {
      value.push_back(kHex[c >> 4]);
      value.push_back(kHex[c & 15]);
    }
    OPENSSL_cleanse(random.data(), random.size());
    values_.push_back(value);
    return value;
  }

  // Learns every key version of `handles` through the token (see the file comment).
  void LearnKeys(const std::vector<uint64_t>& handles) {
    KeyctlResult backup = Run("--json backup create");
    ASSERT_EQ(backup.exit_code, 0) << backup.err;
    const uint64_t id = JsonNumber(backup.JsonOrEmpty().value("id", nlohmann::json(0)));
    ASSERT_NE(id, 0u) << backup.out;
    const std::string key_db = daemon_->dir() + "/backups/full/" + std::to_string(id) + "/keys";
    ASSERT_TRUE(fs::is_directory(key_db)) << key_db;
    passwd* user = getpwnam("nobody");
    ASSERT_NE(user, nullptr);
    const std::string dir = daemon_->dir();
    std::string answer = testing::RunAsUid(user->pw_uid, daemon_->daemon_gid(), [&] {
      return UnwrapInChild(dir, static_cast<uint32_t>(id), handles);
    });
    ASSERT_FALSE(answer.empty());
    ASSERT_EQ(answer[0], 'K') << "the child could not learn the keys: " << answer.substr(1);
    ASSERT_EQ((answer.size() - 1) % kRecordBytes, 0u);
    for (size_t at = 1; at < answer.size(); at += kRecordBytes) {
      LearntKey key;
      key.handle = ReadInteger(answer, at, 8);
      key.purpose = static_cast<KeyPurpose>(ReadInteger(answer, at + 8, 1));
      key.version = static_cast<uint32_t>(ReadInteger(answer, at + 9, 4));
      key.bytes = answer.substr(at + 13, hsm::kDekBytes);
      keys_.push_back(std::move(key));
    }
    OPENSSL_cleanse(answer.data(), answer.size());
    // Four purposes, one version each, per dataset.
    ASSERT_EQ(keys_.size(), 4 * handles.size());
  }

  // "records key v1 of mem/kept", for messages.
  std::string KeyName(const LearntKey& key) const {
    return std::string(storage::KeyPurposeName(key.purpose)) + " key v" +
           std::to_string(key.version) + " of " + names_.at(key.handle);
  }

  // Scans the daemon for every learnt key and every value, by fragments (Fragments()).
  void Scan() {
    std::vector<std::string> needles;
    needle_owner_.clear();
    auto add = [&](const std::string& secret, size_t skip, size_t owner) {
      for (size_t at = skip; at + kFragmentBytes <= secret.size(); at += kFragmentBytes) {
        needles.push_back(secret.substr(at, kFragmentBytes));
        needle_owner_.push_back(owner);
      }
    };
    for (size_t i = 0; i < keys_.size(); ++i) add(keys_[i].bytes, 0, i);
    for (size_t j = 0; j < values_.size(); ++j)
      add(values_[j], kValuePrefix.size(), KeyCount() + j);
    auto scan = testing::ScanProcessMemory(daemon_->pid(), needles);
    for (std::string& needle : needles) OPENSSL_cleanse(needle.data(), needle.size());
    ASSERT_TRUE(scan.ok()) << scan.status();
    EXPECT_GT(scan->bytes_read, 0u);
    scan_ = *std::move(scan);
  }

  size_t KeyCount() const { return keys_.size(); }

  // Fragments of secret `owner` (key i, or value j as KeyCount() + j) found by the last scan.
  size_t Count(size_t owner) const {
    size_t count = 0;
    for (const testing::MemoryHit& hit : scan_.hits) count += needle_owner_[hit.needle] == owner;
    return count;
  }
  // "2 in stack of thread X, 1 in anonymous rw-p 16384 KiB", or "none" (no bytes).
  std::string Where(size_t owner) const {
    std::map<std::string, size_t> per_mapping;
    for (const testing::MemoryHit& hit : scan_.hits) {
      if (needle_owner_[hit.needle] == owner) ++per_mapping[hit.mapping.Describe()];
    }
    std::string text;
    for (const auto& [mapping, count] : per_mapping) {
      text += (text.empty() ? "" : ", ") + std::to_string(count) + " in " + mapping;
    }
    return text.empty() ? "none" : text;
  }

  // The keys of dataset `handle` and purpose `purpose` (one version each here): fragments found,
  // and where, for messages.
  size_t KeyFragments(uint64_t handle, KeyPurpose purpose) const {
    size_t count = 0;
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (keys_[i].handle == handle && keys_[i].purpose == purpose) count += Count(i);
    }
    return count;
  }
  std::string KeyHits(uint64_t handle, KeyPurpose purpose) const {
    std::string text;
    for (size_t i = 0; i < keys_.size(); ++i) {
      if (keys_[i].handle != handle || keys_[i].purpose != purpose) continue;
      text += KeyName(keys_[i]) + ": " + Where(i) + "\n";
    }
    return text;
  }

  void PutAndGet(client::Client& client, const std::string& dataset, int records) {
    for (int i = 0; i < records; ++i) {
      const std::string id = "record-" + std::to_string(i);
      const std::string value = NewValue();
      ASSERT_TRUE(client.PutRecord(dataset, id, value).ok());
      auto read = client.GetRecord(dataset, id);
      ASSERT_TRUE(read.ok()) << read.status();
      EXPECT_TRUE(*read == value) << "record " << id << " of " << dataset << " read back wrong";
    }
  }

  std::unique_ptr<Cofferd> daemon_;
  std::map<uint64_t, std::string> names_;
  std::vector<LearntKey> keys_;
  std::vector<std::string> values_;
  testing::MemoryScan scan_;
  std::vector<size_t> needle_owner_;  // of each needle of the last scan: key i, or KeyCount() + j
};

INSTANTIATE_TEST_SUITE_P(OnWorkersAndOnTheReactor, SecretsInMemoryTest, ::testing::Values(0u, 50u),
                         [](const ::testing::TestParamInfo<uint32_t>& param_info) {
                           return "Window" + std::to_string(param_info.param) + "ms";
                         });

TEST_P(SecretsInMemoryTest, KeysAndValuesLeaveNoCopyBehind) {
  const uint64_t doomed = CreateDataset("mem/doomed");
  const uint64_t idle = CreateDataset("mem/idle");
  const uint64_t kept = CreateDataset("mem/kept");
  ASSERT_FALSE(HasFailure());
  {
    auto client = client::Client::Connect(daemon_->data_socket());
    ASSERT_TRUE(client.ok()) << client.status();
    for (const char* name : {"mem/doomed", "mem/idle", "mem/kept"}) {
      PutAndGet(**client, name, 2);
    }
  }
  ASSERT_NO_FATAL_FAILURE(LearnKeys({doomed, idle, kept}));

  // 1. Positive control: the records and lookup keys of every dataset are cached, so found.
  // Keys made at creation and never used since (attachments, pseudonym) were wiped once
  // wrapped: no copy.
  ASSERT_NO_FATAL_FAILURE(Scan());
  for (uint64_t handle : {doomed, idle, kept}) {
    for (KeyPurpose purpose : kPurposes) {
      const bool in_use = purpose == KeyPurpose::kRecords || purpose == KeyPurpose::kLookup;
      std::cout << "while cached, " << KeyHits(handle, purpose);  // where, never the bytes
      if (in_use) {
        EXPECT_GT(KeyFragments(handle, purpose), 0u)
            << "a cached key was not found: the scan is not seeing the daemon's memory\n"
            << KeyHits(handle, purpose);
      } else {
        EXPECT_EQ(KeyFragments(handle, purpose), 0u)
            << "a key made at creation and never used left a copy\n"
            << KeyHits(handle, purpose);
      }
    }
  }
  // The values of finished requests: the frames were wiped in the connection's buffers, and
  // every buffer freed since was wiped by cofferd's operator delete.
  for (size_t j = 0; j < values_.size(); ++j) {
    EXPECT_EQ(Count(KeyCount() + j), 0u)
        << "the value of record " << j % 2 << " of dataset " << j / 2
        << " (in creation order) is still in memory after its requests finished: "
        << Where(KeyCount() + j);
  }

  // 2. Destroyed: disabled (the cache drops its keys), destruction scheduled, and past the
  // one-second wait the rotation clock's run destroys the wrapping keys.
  ASSERT_EQ(Run("dataset disable mem/doomed").exit_code, 0);
  ASSERT_EQ(Run("dataset destroy mem/doomed").exit_code, 0);
  KeyctlResult ran = daemon_->RunJobAfter(std::chrono::seconds(2), "rotation");
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  ASSERT_NO_FATAL_FAILURE(Scan());
  for (KeyPurpose purpose : kPurposes) {
    EXPECT_EQ(KeyFragments(doomed, purpose), 0u) << "a destroyed dataset's key is still in memory\n"
                                                 << KeyHits(doomed, purpose);
  }
  EXPECT_GT(KeyFragments(kept, KeyPurpose::kRecords), 0u) << "control: a cached key was not found\n"
                                                          << KeyHits(kept, KeyPurpose::kRecords);

  // 3. Evicted: past the cache's time-to-live the rotation clock's run drops every expired key,
  // used or not since. mem/kept is then read again, which loads its keys anew (the control).
  ran = daemon_->RunJobAfter(kms::KeyCacheOptions{}.ttl + std::chrono::seconds(1), "rotation");
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  {
    auto client = client::Client::Connect(daemon_->data_socket());
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->GetRecord("mem/kept", "record-0").ok());
  }
  ASSERT_NO_FATAL_FAILURE(Scan());
  for (KeyPurpose purpose : kPurposes) {
    EXPECT_EQ(KeyFragments(idle, purpose), 0u)
        << "a key past the cache's time-to-live is still in memory\n"
        << KeyHits(idle, purpose);
  }
  EXPECT_GT(KeyFragments(kept, KeyPurpose::kRecords), 0u)
      << "control: a key just loaded again was not found\n"
      << KeyHits(kept, KeyPurpose::kRecords);
  for (size_t j = 0; j < values_.size(); ++j) {
    EXPECT_EQ(Count(KeyCount() + j), 0u)
        << "the value of record " << j % 2 << " of dataset " << j / 2
        << " (in creation order) is in memory at the end: " << Where(KeyCount() + j);
  }
}

}  // namespace
}  // namespace coffer
