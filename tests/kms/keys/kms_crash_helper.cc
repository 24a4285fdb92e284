// Child process for the crash tests: opens the token, audit log and key manager in the given
// directories and runs one operation with a crash point that SIGKILLs the process at the named
// step (its `nth` occurrence). Exits 0 if the operation finished without reaching the step.
//
//   kms_crash_helper <keydb dir> <audit dir> <op: create|destroy|rewrap> <step> <nth> <out file>
//
// SOFTHSM2_CONF, COFFER_HSM_TOKEN and COFFER_HSM_PIN_FILE come from the environment. For
// destroy and rewrap, the helper first creates the dataset "crm" (no crash point armed), seals
// a record under records v1 and writes "<handle> <hex ciphertext>" to <out file>.

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "hsm/hsm_client.h"
#include "kms/audit/audit_log.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/key_manager.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"

namespace {

using namespace coffer;  // NOLINT(google-build-using-namespace): a small test program

int Fail(const char* what, const absl::Status& status) {
  (void)std::fprintf(stderr, "kms_crash_helper: %s: %s\n", what,
                     std::string(status.message()).c_str());
  return 2;
}

std::string Hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) return 64;
  const std::string keydb = argv[1], audit_dir = argv[2], op = argv[3], step = argv[4];
  const int nth = static_cast<int>(std::strtol(argv[5], nullptr, 10));
  const std::string out_file = argv[6];

  hsm::HsmOptions hsm_options;
  hsm_options.token_label = std::getenv("COFFER_HSM_TOKEN");
  hsm_options.pin = hsm::PinSource::FromFile(std::getenv("COFFER_HSM_PIN_FILE"));
  auto client = hsm::HsmClient::Open(hsm_options);
  if (!client.ok()) return Fail("hsm", client.status());
  kms::HsmCheckpointSigner signer((*client)->signer());
  kms::audit::testing::FakeClock clock;
  kms::audit::AuditLogOptions log_options;
  log_options.directory = audit_dir;
  log_options.signer = &signer;
  log_options.epoch_keys = kms::HsmEpochKeyProvider((*client)->row_authenticator());
  log_options.clock = &clock;
  auto log = kms::audit::AuditLog::Open(std::move(log_options));
  if (!log.ok()) return Fail("audit", log.status());

  int seen = 0;
  bool armed = false;
  kms::KeyManagerOptions options;
  options.key_db_directory = keydb;
  options.modules = {{"softhsm", &(*client)->wrapping_keys()}};
  options.default_module = "softhsm";
  options.row_authenticator = &(*client)->row_authenticator();
  options.signer = &(*client)->signer();
  options.audit_log = log->get();
  options.clock = &clock;
  options.default_policy.destruction_wait = std::chrono::seconds(0);
  options.crash_point = [&](std::string_view reached) {
    if (armed && reached == step && ++seen == nth) (void)std::raise(SIGKILL);
  };
  auto manager = kms::KeyManager::Open(std::move(options));
  if (!manager.ok()) return Fail("open", manager.status());
  const auto admin = kms::testing::TestAdmin(7);

  if (op == "create") {
    armed = true;
    auto handle = (*manager)->CreateDataset("crm", std::nullopt, admin);
    if (!handle.ok()) return Fail("create", handle.status());
    return 0;
  }
  auto handle = (*manager)->CreateDataset("crm", std::nullopt, admin);
  if (!handle.ok()) return Fail("create", handle.status());
  // Two records versions and two attachments versions, so re-wrap has several rows.
  auto key = (*manager)->PrimaryKey(*handle, storage::KeyPurpose::kRecords, 1);
  if (!key.ok()) return Fail("key", key.status());
  std::ofstream(out_file) << *handle << " " << Hex(kms::testing::SealRecord(**key, "erin")) << "\n";
  for (auto purpose : {storage::KeyPurpose::kRecords, storage::KeyPurpose::kAttachments}) {
    auto rotated = (*manager)->Rotate(*handle, purpose, kms::RotationCause::kManual, admin);
    if (!rotated.ok()) return Fail("rotate", rotated.status());
  }
  if (op == "destroy") {
    absl::Status s = (*manager)->Disable(*handle, admin);
    if (s.ok()) s = (*manager)->ScheduleDestruction(*handle, admin);
    if (!s.ok()) return Fail("schedule", s);
    armed = true;
    auto report = (*manager)->RunDueWork();
    if (!report.ok()) return Fail("run", report.status());
    return report->destroyed.size() == 1 ? 0 : 3;
  }
  if (op == "rewrap") {
    armed = true;
    absl::Status s = (*manager)->Rewrap(*handle, "", /*destroy_old=*/true, admin);
    if (!s.ok()) return Fail("rewrap", s);
    return 0;
  }
  return 64;
}
