#include "storage/data_key.h"

#include "crypto/base/status.h"
#include "crypto/hkdf.h"
#include "crypto/pooled_contexts.h"
#include "crypto/random.h"
#include "gtest/gtest.h"

namespace coffer::storage {
namespace {

crypto::SecretBytes FreshKey() { return *crypto::RandomSecret(32); }

TEST(DataKeyTest, RecordKeysSealAndOpenUnderTheirVersion) {
  auto key = DataKey::Create(KeyPurpose::kRecords, 7, FreshKey());
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ((*key)->version(), 7u);
  auto aead = (*key)->record_aead();
  ASSERT_TRUE(aead.ok());
  auto sealed = (*aead)->Seal("value", "ad");
  ASSERT_TRUE(sealed.ok());
  auto header = crypto::ParseRecordHeader(*sealed);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->key_version, 7u);
  EXPECT_EQ(*(*aead)->Open(*sealed, "ad"), "value");
  EXPECT_EQ(ErrorCodeOf((*key)->hmac().status()), ErrorCode::kFailedPrecondition);
}

TEST(DataKeyTest, LookupKeysHmacOnly) {
  auto key = DataKey::Create(KeyPurpose::kLookup, 1, FreshKey());
  ASSERT_TRUE(key.ok());
  auto hmac = (*key)->hmac();
  ASSERT_TRUE(hmac.ok());
  EXPECT_TRUE((*hmac)->Compute("customer-42").ok());
  EXPECT_EQ(ErrorCodeOf((*key)->record_aead().status()), ErrorCode::kFailedPrecondition);
}

TEST(DataKeyTest, PseudonymKeysSealWithTheDerivedSivKeyOnly) {
  crypto::SecretBytes dek = FreshKey();
  auto derived = crypto::HkdfSha256(dek, "", kPseudonymSivKeyInfo, crypto::kAesSiv256KeySize);
  ASSERT_TRUE(derived.ok());
  auto expected = crypto::AesSiv::Create(*derived);
  ASSERT_TRUE(expected.ok());
  auto key = DataKey::Create(KeyPurpose::kPseudonym, 2, std::move(dek));
  ASSERT_TRUE(key.ok()) << key.status();
  auto siv = (*key)->aes_siv();
  ASSERT_TRUE(siv.ok()) << siv.status();
  auto sealed = (*siv)->Seal("jane@example.com", {"ad"});
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(*sealed, *(*expected)->Seal("jane@example.com", {"ad"}));
  EXPECT_EQ(*(*siv)->Open(*sealed, {"ad"}), "jane@example.com");
  EXPECT_EQ(ErrorCodeOf((*key)->record_aead().status()), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf((*key)->hmac().status()), ErrorCode::kFailedPrecondition);
  // The key cache's byte bound counts what each key may hold beyond its 32 bytes: a pseudonym
  // key its SIV and CMAC contexts, a lookup key its keyed template and a full pool of contexts.
  constexpr size_t kContextBytes = 1024;
  EXPECT_GT((*key)->MemoryBytes(), sizeof(DataKey) + 32 + 2 * kContextBytes);
  EXPECT_GT((*DataKey::Create(KeyPurpose::kLookup, 1, FreshKey()))->MemoryBytes(),
            sizeof(DataKey) + 32 + crypto::kPooledContextsPerKey * kContextBytes);
  for (auto purpose : {KeyPurpose::kRecords, KeyPurpose::kAttachments, KeyPurpose::kLookup}) {
    auto other = DataKey::Create(purpose, 1, FreshKey());
    ASSERT_TRUE(other.ok());
    EXPECT_EQ(ErrorCodeOf((*other)->aes_siv().status()), ErrorCode::kFailedPrecondition);
  }
}

TEST(DataKeyTest, RejectsBadKeysAndPurposes) {
  EXPECT_EQ(
      ErrorCodeOf(DataKey::Create(KeyPurpose::kRecords, 1, *crypto::RandomSecret(16)).status()),
      ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(DataKey::Create(static_cast<KeyPurpose>(9), 1, FreshKey()).status()),
            ErrorCode::kInvalidArgument);
}

TEST(DataKeyTest, PurposeNamesRoundTrip) {
  for (auto purpose : {KeyPurpose::kRecords, KeyPurpose::kAttachments, KeyPurpose::kLookup,
                       KeyPurpose::kPseudonym}) {
    EXPECT_EQ(ParseKeyPurpose(KeyPurposeName(purpose)), purpose);
  }
  EXPECT_EQ(ParseKeyPurpose("records "), std::nullopt);
}

TEST(DataKeyTest, KeyMaterialLeavesTheSecureHeapWithTheLastHolder) {
  for (auto purpose : {KeyPurpose::kAttachments, KeyPurpose::kPseudonym}) {
    size_t before = crypto::SecureHeapUsedBytes();
    {
      auto key = DataKey::Create(purpose, 1, FreshKey());
      ASSERT_TRUE(key.ok());
      std::shared_ptr<const DataKey> second = *key;
      key->reset();
      EXPECT_GT(crypto::SecureHeapUsedBytes(), before);
      EXPECT_EQ(second->key().size(), 32u);
    }
    // Pseudonym: the derived SIV key was wiped and freed when the contexts were keyed.
    EXPECT_EQ(crypto::SecureHeapUsedBytes(), before) << KeyPurposeName(purpose);
  }
}

}  // namespace
}  // namespace coffer::storage
