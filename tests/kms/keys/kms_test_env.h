// Test environment for the key manager: a real SoftHSM2 token (per suite) and HsmClient, a real
// RocksDB key DB and audit log in a temporary directory (per test), a fake clock, an in-memory
// data counter. The HSM adapters the tests wire are the daemon's own (kms/keys/hsm_adapters.h).
//
// Test-only; not thread-safe except where stated.

#ifndef COFFER_TESTS_KMS_KMS_TEST_ENV_H_
#define COFFER_TESTS_KMS_KMS_TEST_ENV_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "absl/status/statusor.h"
#include "hsm/hsm_client.h"
#include "kms/audit/audit_log.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/key_manager.h"
#include "tests/hsm/softhsm_token.h"

namespace coffer::kms::testing {

// One real SoftHSM2 token for a whole test suite, with the client and the checkpoint signer the
// daemon wires: Open it in SetUpTestSuite, Reset it in TearDownTestSuite.
struct SuiteToken {
  std::unique_ptr<hsm::testing::SoftHsmToken> token;
  std::unique_ptr<hsm::HsmClient> client;
  std::unique_ptr<HsmCheckpointSigner> signer;

  absl::Status Open(std::string_view label);
  void Reset();

  // Options for an audit log in `directory` whose checkpoints are signed and whose epoch keys
  // are derived in this token, on `clock`.
  audit::AuditLogOptions AuditOptions(std::string directory, const Clock* clock) const;
};

// Counts per (dataset, purpose, version), set by the test. Thread-safe.
class MapDataCounter final : public ProtectedDataCounter {
 public:
  void Set(uint64_t handle, storage::KeyPurpose purpose, uint32_t version, uint64_t count) {
    std::lock_guard<std::mutex> lock(mu_);
    counts_[{handle, purpose, version}] = count;
  }
  absl::StatusOr<uint64_t> CountProtectedBy(uint64_t handle, storage::KeyPurpose purpose,
                                            uint32_t version) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = counts_.find({handle, purpose, version});
    return it == counts_.end() ? 0 : it->second;
  }
  // No data DB and so no writers to wait for: the counts are what the test set.
  void AwaitWritesUnderWay() override {}
  void SetNewestWrite(uint64_t handle, int64_t micros) {
    std::lock_guard<std::mutex> lock(mu_);
    newest_[handle] = micros;
  }
  absl::StatusOr<std::optional<int64_t>> NewestItemWrite(uint64_t handle) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = newest_.find(handle);
    if (it == newest_.end()) return std::nullopt;
    return it->second;
  }

 private:
  std::mutex mu_;
  std::map<std::tuple<uint64_t, storage::KeyPurpose, uint32_t>, uint64_t> counts_;
  std::map<uint64_t, int64_t> newest_;
};

// An admin actor for tests.
audit::AuditActor TestAdmin(uint64_t admin_id = 1);

// Seals `plaintext` under `key` (records purpose) with fixed associated data.
std::string SealRecord(const storage::DataKey& key, std::string_view plaintext);
absl::StatusOr<std::string> OpenRecord(const storage::DataKey& key, std::string_view sealed);

}  // namespace coffer::kms::testing

#endif  // COFFER_TESTS_KMS_KMS_TEST_ENV_H_
