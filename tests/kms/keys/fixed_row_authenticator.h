// FixedRowAuthenticator: HMAC-SHA256 in software under a fixed, public test key (bytes
// 0x00..0x1f), standing in for the token's row key in fast tests and golden files. Never a real
// secret; the tests that count use a real SoftHSM2 token (kms_test_env.h).

#ifndef COFFER_TESTS_KMS_KEYS_FIXED_ROW_AUTHENTICATOR_H_
#define COFFER_TESTS_KMS_KEYS_FIXED_ROW_AUTHENTICATOR_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>

#include "crypto/hmac.h"
#include "crypto/secret_bytes.h"
#include "gtest/gtest.h"
#include "hsm/service_keys.h"

namespace coffer::kms::testing {

class FixedRowAuthenticator final : public hsm::RowAuthenticator {
 public:
  FixedRowAuthenticator() {
    std::array<uint8_t, 32> key;
    for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i);
    auto secret = crypto::SecretBytes::CopyFrom(key);
    EXPECT_TRUE(secret.ok());
    auto hmac = crypto::HmacSha256::Create(*secret);
    EXPECT_TRUE(hmac.ok());
    hmac_ = std::make_unique<crypto::HmacSha256>(*std::move(hmac));
  }
  absl::StatusOr<std::array<uint8_t, 32>> HmacRowKey(std::string_view data) override {
    return hmac_->Compute(data);
  }

 private:
  std::unique_ptr<crypto::HmacSha256> hmac_;
};

}  // namespace coffer::kms::testing

#endif  // COFFER_TESTS_KMS_KEYS_FIXED_ROW_AUTHENTICATOR_H_
