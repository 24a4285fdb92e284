// A SIGKILLed process at every step of create, destroy and re-wrap resumes to a consistent
// state: real SoftHSM2 token, real RocksDB key DB and audit log, the operation run in a child
// process (tests/kms/keys/kms_crash_helper.cc) that kills itself at the named step. A kill inside
// the token's own key generation is played by planting a half-made new DWK (labelled, unable to
// wrap) after a kill at rewrap.intent: SoftHSM2 left one when the daemon crash loop
// (tests/kms/cofferd/crash_loop_test.cc) killed cofferd mid re-wrap, and recovery then failed
// every start.

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <memory>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "hsm/internal/labels.h"
#include "kms/audit/verifier.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/tombstone.h"
#include "tests/hsm/softhsm_token.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"

namespace coffer::kms {
namespace {

using ::coffer::hsm::testing::SoftHsmToken;
using storage::KeyPurpose;

struct CrashCase {
  const char* op;
  const char* step;
  int nth;
  // Re-wrap only: a half-made new DWK is in the token when recovery runs.
  bool half_made_new_dwk = false;
};

std::string CaseName(const ::testing::TestParamInfo<CrashCase>& info) {
  std::string name = std::string(info.param.op) + "_" + info.param.step + "_" +
                     std::to_string(info.param.nth) +
                     (info.param.half_made_new_dwk ? "_half_made_new_dwk" : "");
  for (char& c : name) {
    if (c == '.') c = '_';
  }
  return name;
}

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// Puts into `token` what a kill inside SoftHSM2's generation of DWK `version` of dataset
// `handle` can leave: an AES key object with that DWK's label and CKA_ID that cannot wrap
// (SoftHSM2's own leftover has an empty value, so C_WrapKey fails with CKR_GENERAL_ERROR; this
// one is refused the wrap function, which recovery meets the same way).
void PlantHalfMadeWrappingKey(const SoftHsmToken& token, uint64_t handle, uint32_t version) {
  auto client = hsm::HsmClient::Open(token.Options());
  ASSERT_TRUE(client.ok()) << client.status();
  CK_FUNCTION_LIST* f = (*client)->token().functions();
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  ASSERT_EQ(f->C_OpenSession((*client)->token().slot_id(), CKF_SERIAL_SESSION | CKF_RW_SESSION,
                             nullptr, nullptr, &session),
            static_cast<CK_RV>(CKR_OK));
  const hsm::internal::ObjectId id{hsm::internal::ObjectKind::kDatasetWrappingKey, handle, version};
  std::string label = hsm::internal::ObjectLabel(id);
  std::string object_id = hsm::internal::EncodeObjectId(id);
  CK_OBJECT_CLASS object_class = CKO_SECRET_KEY;
  CK_KEY_TYPE key_type = CKK_AES;
  CK_BBOOL yes = CK_TRUE;
  CK_BBOOL no = CK_FALSE;
  unsigned char value[32] = {};
  CK_ATTRIBUTE attributes[] = {
      {CKA_CLASS, &object_class, sizeof(object_class)},
      {CKA_KEY_TYPE, &key_type, sizeof(key_type)},
      {CKA_TOKEN, &yes, sizeof(yes)},
      {CKA_PRIVATE, &yes, sizeof(yes)},
      {CKA_LABEL, label.data(), label.size()},
      {CKA_ID, object_id.data(), object_id.size()},
      {CKA_VALUE, value, sizeof(value)},
      {CKA_WRAP, &no, sizeof(no)},
      {CKA_UNWRAP, &no, sizeof(no)},
  };
  CK_OBJECT_HANDLE object = CK_INVALID_HANDLE;
  EXPECT_EQ(f->C_CreateObject(session, attributes, std::size(attributes), &object),
            static_cast<CK_RV>(CKR_OK));
  f->C_CloseSession(session);
  EXPECT_TRUE((*client)->Close().ok());
}

class CrashTest : public ::testing::TestWithParam<CrashCase> {};

TEST_P(CrashTest, ResumesToAConsistentState) {
  const CrashCase c = GetParam();
  auto token = SoftHsmToken::Create("kms-crash");
  ASSERT_TRUE(token.ok()) << token.status();
  audit::testing::TempDir dir;
  const std::string keydb = dir.Sub("keydb"), audit_dir = dir.Sub("audit"), out = dir.Sub("out");

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("COFFER_HSM_TOKEN", (*token)->label().c_str(), 1);
    setenv("COFFER_HSM_PIN_FILE", (*token)->pin_file().c_str(), 1);
    execl(COFFER_KMS_CRASH_HELPER, COFFER_KMS_CRASH_HELPER, keydb.c_str(), audit_dir.c_str(), c.op,
          c.step, std::to_string(c.nth).c_str(), out.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  // The step must have been reached: otherwise this case would prove nothing.
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "helper exited with " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  if (c.half_made_new_dwk) {
    std::ifstream in(out);
    uint64_t handle = 0;
    in >> handle;
    ASSERT_NE(handle, 0u);
    PlantHalfMadeWrappingKey(**token, handle, 2);
    if (HasFatalFailure()) return;
  }

  auto client = hsm::HsmClient::Open((*token)->Options());
  ASSERT_TRUE(client.ok()) << client.status();
  HsmCheckpointSigner signer((*client)->signer());
  audit::testing::FakeClock clock;
  audit::AuditLogOptions log_options;
  log_options.directory = audit_dir;
  log_options.signer = &signer;
  log_options.epoch_keys = HsmEpochKeyProvider((*client)->row_authenticator());
  log_options.clock = &clock;
  auto log = audit::AuditLog::Open(std::move(log_options));
  ASSERT_TRUE(log.ok()) << log.status();
  KeyManagerOptions options;
  options.key_db_directory = keydb;
  options.modules = {{"softhsm", &(*client)->wrapping_keys()}};
  options.default_module = "softhsm";
  options.row_authenticator = &(*client)->row_authenticator();
  options.signer = &(*client)->signer();
  options.audit_log = log->get();
  options.clock = &clock;
  auto manager = KeyManager::Open(options);
  ASSERT_TRUE(manager.ok()) << manager.status();
  const RecoveryReport& report = (*manager)->recovery_report();
  EXPECT_TRUE(report.missing_wrapping_keys.empty());
  EXPECT_TRUE(report.unknown_wrapping_keys.empty());
  auto token_keys = (*client)->wrapping_keys().ListWrappingKeys();
  ASSERT_TRUE(token_keys.ok());

  const std::string op = c.op;
  if (op == "create") {
    if (std::string(c.step) == "create.committed") {
      auto handle = (*manager)->FindDataset("crm");
      ASSERT_TRUE(handle.ok());
      for (KeyPurpose p : {KeyPurpose::kRecords, KeyPurpose::kAttachments, KeyPurpose::kLookup,
                           KeyPurpose::kPseudonym}) {
        EXPECT_TRUE((*manager)->KeyForVersion(*handle, p, 1).ok());
      }
      EXPECT_EQ(token_keys->size(), 1u);
    } else {
      EXPECT_EQ(report.creates_rolled_back.size(), 1u);
      EXPECT_TRUE((*manager)->ListDatasets().empty());
      EXPECT_TRUE(token_keys->empty()) << "orphaned DWK left in the token";
      EXPECT_TRUE((*manager)->CreateDataset("crm", std::nullopt, testing::TestAdmin()).ok());
    }
  } else {
    std::ifstream in(out);
    uint64_t handle = 0;
    std::string hex;
    in >> handle >> hex;
    ASSERT_NE(handle, 0u);
    if (op == "destroy") {
      if (std::string(c.step) != "destroy.committed") {
        EXPECT_EQ(report.destroys_completed.size(), 1u);
      }
      EXPECT_EQ((*manager)->DescribeDataset(handle)->state, DatasetState::kDestroyed);
      EXPECT_TRUE(token_keys->empty());
      EXPECT_EQ(ErrorCodeOf((*manager)->KeyForVersion(handle, KeyPurpose::kRecords, 1).status()),
                ErrorCode::kKeyDestroyed);
      auto tombstone = (*manager)->GetTombstone(handle);
      ASSERT_TRUE(tombstone.ok());
      auto pem = (*client)->signer().PublicKeyPem();
      ASSERT_TRUE(pem.ok());
      auto content = VerifyTombstone(*tombstone, *pem);
      ASSERT_TRUE(content.ok()) << content.status();
      EXPECT_EQ(content->actor_admin_id(), 7u);
      EXPECT_EQ(content->key_versions_destroyed(), 6u);
    } else {  // rewrap with destroy_old
      EXPECT_EQ(report.rewraps_completed.size(), 1u);
      auto info = (*manager)->DescribeDataset(handle);
      ASSERT_TRUE(info.ok());
      EXPECT_EQ(info->current_wrapping_key, (WrappingKeyRef{"softhsm", 2}));
      ASSERT_EQ(info->live_wrapping_keys.size(), 1u);
      for (const auto& p : info->purposes) {
        for (const auto& v : p.versions) {
          EXPECT_EQ(v.wrapping_key, (WrappingKeyRef{"softhsm", 2}));
        }
      }
      ASSERT_EQ(token_keys->size(), 1u);
      EXPECT_EQ((*token_keys)[0].version, 2u);
      auto key = (*manager)->KeyForVersion(handle, KeyPurpose::kRecords, 1);
      ASSERT_TRUE(key.ok()) << key.status();
      auto plain = testing::OpenRecord(**key, Unhex(hex));
      ASSERT_TRUE(plain.ok());
      EXPECT_EQ(*plain, "erin");
    }
  }
  manager->reset();
  EXPECT_TRUE((*log)->Close().ok());
  EXPECT_TRUE((*client)->Close().ok());
}

INSTANTIATE_TEST_SUITE_P(EveryStep, CrashTest,
                         ::testing::Values(CrashCase{"create", "create.intent", 1},
                                           CrashCase{"create", "create.wrapping_key", 1},
                                           CrashCase{"create", "create.committed", 1},
                                           CrashCase{"destroy", "destroy.intent", 1},
                                           CrashCase{"destroy", "destroy.wrapping_key", 1},
                                           CrashCase{"destroy", "destroy.committed", 1},
                                           CrashCase{"rewrap", "rewrap.intent", 1},
                                           CrashCase{"rewrap", "rewrap.intent", 1, true},
                                           CrashCase{"rewrap", "rewrap.wrapping_key", 1},
                                           CrashCase{"rewrap", "rewrap.row", 1},
                                           CrashCase{"rewrap", "rewrap.row", 4},
                                           CrashCase{"rewrap", "rewrap.switched", 1},
                                           CrashCase{"rewrap", "rewrap.old_destroyed", 1}),
                         CaseName);

}  // namespace
}  // namespace coffer::kms
