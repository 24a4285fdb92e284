#include "tests/kms/keys/kms_test_env.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

namespace coffer::kms::testing {

namespace {
constexpr std::string_view kAssociatedData = "kms-test-record";
}  // namespace

audit::AuditActor TestAdmin(uint64_t admin_id) {
  audit::AuditActor actor;
  actor.uid = 1000 + static_cast<uint32_t>(admin_id);
  actor.pid = static_cast<uint32_t>(getpid());
  actor.admin_id = admin_id;
  actor.admin_name = "admin" + std::to_string(admin_id);
  actor.socket = audit::v1::SOCKET_ADMIN;
  return actor;
}

std::string SealRecord(const storage::DataKey& key, std::string_view plaintext) {
  auto aead = key.record_aead();
  if (!aead.ok()) std::abort();
  auto sealed = (*aead)->Seal(plaintext, kAssociatedData);
  if (!sealed.ok()) std::abort();
  return *sealed;
}

absl::StatusOr<std::string> OpenRecord(const storage::DataKey& key, std::string_view sealed) {
  auto aead = key.record_aead();
  if (!aead.ok()) return aead.status();
  return (*aead)->Open(sealed, kAssociatedData);
}

absl::Status SuiteToken::Open(std::string_view label) {
  auto created = hsm::testing::SoftHsmToken::Create(std::string(label));
  if (!created.ok()) return created.status();
  token = *std::move(created);
  auto opened = hsm::HsmClient::Open(token->Options());
  if (!opened.ok()) return opened.status();
  client = *std::move(opened);
  signer = std::make_unique<HsmCheckpointSigner>(client->signer());
  return absl::OkStatus();
}

audit::AuditLogOptions SuiteToken::AuditOptions(std::string directory, const Clock* clock) const {
  audit::AuditLogOptions options;
  options.directory = std::move(directory);
  options.signer = signer.get();
  options.epoch_keys = HsmEpochKeyProvider(client->row_authenticator());
  options.clock = clock;
  return options;
}

void SuiteToken::Reset() {
  signer.reset();
  if (client) client->Close().IgnoreError();
  client.reset();
  token.reset();
}

}  // namespace coffer::kms::testing
