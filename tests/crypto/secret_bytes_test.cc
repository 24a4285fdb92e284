#include "crypto/secret_bytes.h"

#include <openssl/crypto.h>

#include <sstream>
#include <type_traits>

#include "crypto/base/status.h"
#include "gtest/gtest.h"

namespace coffer::crypto {
namespace {

static_assert(!std::is_copy_constructible_v<SecretBytes>);
static_assert(!std::is_copy_assignable_v<SecretBytes>);
static_assert(std::is_nothrow_move_constructible_v<SecretBytes>);

TEST(SecretBytesTest, LivesInTheSecureHeap) {
  absl::StatusOr<SecretBytes> secret = SecretBytes::Allocate(32);
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ(secret->size(), 32u);
  EXPECT_TRUE(CRYPTO_secure_malloc_initialized());
  EXPECT_TRUE(CRYPTO_secure_allocated(secret->data()));
  for (uint8_t b : secret->span()) EXPECT_EQ(b, 0);
}

TEST(SecretBytesTest, CopyFromCloneAndEquality) {
  const uint8_t raw[] = {1, 2, 3, 4, 5};
  absl::StatusOr<SecretBytes> a = SecretBytes::CopyFrom(raw);
  ASSERT_TRUE(a.ok());
  absl::StatusOr<SecretBytes> b = a->Clone();
  ASSERT_TRUE(b.ok());
  EXPECT_NE(a->data(), b->data());
  EXPECT_TRUE(SecretEquals(*a, *b));
  b->data()[4] ^= 1;
  EXPECT_FALSE(SecretEquals(*a, *b));
  absl::StatusOr<SecretBytes> shorter = SecretBytes::CopyFrom(absl::MakeConstSpan(raw, 4));
  ASSERT_TRUE(shorter.ok());
  EXPECT_FALSE(SecretEquals(*a, *shorter));
  EXPECT_TRUE(SecretEquals(SecretBytes(), SecretBytes()));
}

TEST(SecretBytesTest, MoveLeavesSourceEmptyAndFreesOnDestruction) {
  size_t before = SecureHeapUsedBytes();
  {
    absl::StatusOr<SecretBytes> a = SecretBytes::Allocate(64);
    ASSERT_TRUE(a.ok());
    EXPECT_GT(SecureHeapUsedBytes(), before);
    SecretBytes moved = std::move(*a);
    EXPECT_TRUE(a->empty());  // NOLINT(bugprone-use-after-move): the contract under test
    EXPECT_EQ(a->data(), nullptr);
    EXPECT_EQ(moved.size(), 64u);
    SecretBytes assigned;
    assigned = std::move(moved);
    EXPECT_EQ(assigned.size(), 64u);
  }
  EXPECT_EQ(SecureHeapUsedBytes(), before);
}

TEST(SecretBytesTest, FreedMemoryIsWiped) {
  absl::StatusOr<SecretBytes> a = SecretBytes::Allocate(32);
  ASSERT_TRUE(a.ok());
  for (size_t i = 0; i < a->size(); ++i) a->data()[i] = 0xA5;
  const uint8_t* where = a->data();
  *a = SecretBytes();
  // The secure heap stays mapped after a free, so reading the freed block is defined here;
  // OPENSSL_secure_clear_free must have zeroed it (the heap's free-list link may occupy the
  // first 16 bytes, so check the rest).
  for (size_t i = 16; i < 32; ++i) EXPECT_EQ(where[i], 0) << i;
}

TEST(SecretBytesTest, PrintsOnlyItsSize) {
  const uint8_t raw[] = {0xde, 0xad, 0xbe, 0xef};
  absl::StatusOr<SecretBytes> secret = SecretBytes::CopyFrom(raw);
  ASSERT_TRUE(secret.ok());
  std::ostringstream out;
  PrintTo(*secret, &out);
  EXPECT_EQ(out.str(), "SecretBytes(4 bytes, redacted)");
  EXPECT_EQ(::testing::PrintToString(*secret).find("de"), std::string::npos);
}

TEST(SecretBytesTest, ExhaustionIsAnErrorNotAFallback) {
  // Larger than the whole heap: must fail cleanly instead of using ordinary memory.
  absl::StatusOr<SecretBytes> huge = SecretBytes::Allocate(64u << 20);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(ErrorCodeOf(huge.status()), ErrorCode::kSecureHeapExhausted);
}

TEST(SecretBytesTest, InitializeTwiceWithAnotherSizeIsRefused) {
  ASSERT_TRUE(SecretBytes::Allocate(1).ok());  // sets up the default heap
  EXPECT_TRUE(InitializeSecureHeap(kDefaultSecureHeapBytes).ok());
  absl::Status other = InitializeSecureHeap(kDefaultSecureHeapBytes * 4);
  EXPECT_EQ(ErrorCodeOf(other), ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace coffer::crypto
