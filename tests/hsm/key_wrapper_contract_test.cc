// The KeyWrapper contract (hsm/key_wrapper.h), run against both implementations: the in-memory
// FakeKeyWrapper and DatasetWrappingKeys on a real SoftHSM2 token. The layers above test against
// the fake, so the fake must fail exactly where the token does.

#include <algorithm>
#include <memory>
#include <string>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "gtest/gtest.h"
#include "hsm/key_wrapper.h"
#include "hsm/testing/fake_key_wrapper.h"
#include "tests/hsm/softhsm_token.h"

namespace coffer::hsm {
namespace {

using ::coffer::hsm::testing::SoftHsmToken;
using ::coffer::hsm::testing::UniqueDatasetHandle;

class KeyWrapperContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<SoftHsmToken>> token = SoftHsmToken::Create("contract");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = *std::move(token);
    absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(token_->Options());
    ASSERT_TRUE(client.ok()) << client.status();
    softhsm_ = *std::move(client);
    fake_ = std::make_unique<FakeKeyWrapper>();
  }
  static void TearDownTestSuite() {
    if (softhsm_) {
      EXPECT_TRUE(softhsm_->Close().ok());
    }
    softhsm_.reset();
    fake_.reset();
    token_.reset();
  }

  KeyWrapper& wrapper() {
    if (GetParam() == "fake") return *fake_;
    return softhsm_->wrapping_keys();
  }

  // A fresh DWK and a random DEK wrapped under it.
  WrappingKeyId NewKey() {
    WrappingKeyId id{UniqueDatasetHandle(), 1};
    EXPECT_TRUE(wrapper().CreateWrappingKey(id).ok());
    return id;
  }
  static crypto::SecretBytes NewDek() { return *crypto::RandomSecret(kDekBytes); }

  static inline std::unique_ptr<SoftHsmToken> token_;
  static inline std::unique_ptr<HsmClient> softhsm_;
  static inline std::unique_ptr<FakeKeyWrapper> fake_;
};

TEST_P(KeyWrapperContractTest, WrapUnwrapRoundTripThroughSerializedBlob) {
  WrappingKeyId id = NewKey();
  crypto::SecretBytes dek = NewDek();
  absl::StatusOr<WrappedKey> wrapped = wrapper().Wrap(id, dek);
  ASSERT_TRUE(wrapped.ok()) << wrapped.status();
  EXPECT_EQ(wrapped->mechanism, kMechanismAesKeyWrap);
  EXPECT_EQ(wrapped->key, id);
  EXPECT_EQ(wrapped->wrapped.size(), kDekBytes + 8);

  absl::StatusOr<WrappedKey> parsed = WrappedKey::Parse(wrapped->Serialize());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  absl::StatusOr<crypto::SecretBytes> unwrapped = wrapper().Unwrap(*parsed);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status();
  EXPECT_TRUE(crypto::SecretEquals(*unwrapped, dek));
}

TEST_P(KeyWrapperContractTest, VersionsOfOneDatasetAreDistinctKeys) {
  uint64_t handle = UniqueDatasetHandle();
  ASSERT_TRUE(wrapper().CreateWrappingKey({handle, 1}).ok());
  ASSERT_TRUE(wrapper().CreateWrappingKey({handle, 2}).ok());
  crypto::SecretBytes dek = NewDek();
  absl::StatusOr<WrappedKey> v1 = wrapper().Wrap({handle, 1}, dek);
  absl::StatusOr<WrappedKey> v2 = wrapper().Wrap({handle, 2}, dek);
  ASSERT_TRUE(v1.ok() && v2.ok());
  EXPECT_NE(v1->wrapped, v2->wrapped);
  // A blob relabelled to the other version fails the RFC 3394 integrity check.
  WrappedKey moved = *v1;
  moved.key.version = 2;
  EXPECT_EQ(ErrorCodeOf(wrapper().Unwrap(moved).status()), ErrorCode::kWrappedKeyCorrupt);
}

TEST_P(KeyWrapperContractTest, EveryFlippedBitOfTheWrappedBytesIsCorrupt) {
  WrappingKeyId id = NewKey();
  absl::StatusOr<WrappedKey> wrapped = wrapper().Wrap(id, NewDek());
  ASSERT_TRUE(wrapped.ok());
  for (size_t i = 0; i < wrapped->wrapped.size(); ++i) {
    WrappedKey tampered = *wrapped;
    tampered.wrapped[i] = static_cast<char>(tampered.wrapped[i] ^ (1 << (i % 8)));
    absl::Status status = wrapper().Unwrap(tampered).status();
    EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kWrappedKeyCorrupt) << "byte " << i << ": " << status;
  }
  EXPECT_TRUE(wrapper().Unwrap(*wrapped).ok());  // and the key still works afterwards
}

TEST_P(KeyWrapperContractTest, WrongWrappedLengthIsCorrupt) {
  WrappingKeyId id = NewKey();
  absl::StatusOr<WrappedKey> wrapped = wrapper().Wrap(id, NewDek());
  ASSERT_TRUE(wrapped.ok());
  WrappedKey shorter = *wrapped;
  shorter.wrapped.resize(32);
  EXPECT_EQ(ErrorCodeOf(wrapper().Unwrap(shorter).status()), ErrorCode::kWrappedKeyCorrupt);
  WrappedKey longer = *wrapped;
  longer.wrapped.append(8, '\0');
  EXPECT_EQ(ErrorCodeOf(wrapper().Unwrap(longer).status()), ErrorCode::kWrappedKeyCorrupt);
}

TEST_P(KeyWrapperContractTest, UnknownMechanismIsUnsupported) {
  WrappingKeyId id = NewKey();
  absl::StatusOr<WrappedKey> wrapped = wrapper().Wrap(id, NewDek());
  ASSERT_TRUE(wrapped.ok());
  WrappedKey other = *wrapped;
  other.mechanism = 0x210A;  // CKM_AES_KEY_WRAP_PAD
  EXPECT_EQ(ErrorCodeOf(wrapper().Unwrap(other).status()), ErrorCode::kUnsupportedFormat);
}

TEST_P(KeyWrapperContractTest, DestroyedKeyCannotUnwrapOrWrap) {
  WrappingKeyId id = NewKey();
  absl::StatusOr<WrappedKey> wrapped = wrapper().Wrap(id, NewDek());
  ASSERT_TRUE(wrapped.ok());
  ASSERT_TRUE(wrapper().DestroyWrappingKey(id).ok());
  EXPECT_EQ(ErrorCodeOf(wrapper().Unwrap(*wrapped).status()), ErrorCode::kKeyDestroyed);
  EXPECT_EQ(ErrorCodeOf(wrapper().Wrap(id, NewDek()).status()), ErrorCode::kKeyDestroyed);
  EXPECT_EQ(ErrorCodeOf(wrapper().DestroyWrappingKey(id)), ErrorCode::kHsmKeyNotFound);
}

TEST_P(KeyWrapperContractTest, MissingAndDuplicateKeys) {
  WrappingKeyId never{UniqueDatasetHandle(), 7};
  EXPECT_EQ(ErrorCodeOf(wrapper().Wrap(never, NewDek()).status()), ErrorCode::kHsmKeyNotFound);
  EXPECT_EQ(ErrorCodeOf(wrapper().DestroyWrappingKey(never)), ErrorCode::kHsmKeyNotFound);
  WrappingKeyId id = NewKey();
  EXPECT_EQ(ErrorCodeOf(wrapper().CreateWrappingKey(id)), ErrorCode::kAlreadyExists);
}

TEST_P(KeyWrapperContractTest, DekMustBe32Bytes) {
  WrappingKeyId id = NewKey();
  for (size_t size : {0, 16, 31, 33, 64}) {
    crypto::SecretBytes dek = *crypto::RandomSecret(size);
    EXPECT_EQ(ErrorCodeOf(wrapper().Wrap(id, dek).status()), ErrorCode::kInvalidArgument) << size;
  }
}

TEST_P(KeyWrapperContractTest, ListShowsCreatedAndHidesDestroyedKeysInOrder) {
  uint64_t handle = UniqueDatasetHandle();
  for (uint32_t version : {3u, 1u, 2u})
    ASSERT_TRUE(wrapper().CreateWrappingKey({handle, version}).ok());
  ASSERT_TRUE(wrapper().DestroyWrappingKey({handle, 2}).ok());
  absl::StatusOr<std::vector<WrappingKeyId>> ids = wrapper().ListWrappingKeys();
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(std::is_sorted(ids->begin(), ids->end()));
  auto has = [&](uint32_t v) {
    return std::find(ids->begin(), ids->end(), WrappingKeyId{handle, v}) != ids->end();
  };
  EXPECT_TRUE(has(1));
  EXPECT_FALSE(has(2));
  EXPECT_TRUE(has(3));
}

INSTANTIATE_TEST_SUITE_P(Implementations, KeyWrapperContractTest,
                         ::testing::Values("fake", "softhsm"),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           return param_info.param;
                         });

}  // namespace
}  // namespace coffer::hsm
