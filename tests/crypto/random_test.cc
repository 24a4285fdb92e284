#include "crypto/random.h"

#include <dlfcn.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <set>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"

namespace coffer::crypto {
namespace {

bool AllEqual(absl::Span<const uint8_t> bytes, uint8_t value) {
  for (uint8_t b : bytes) {
    if (b != value) return false;
  }
  return true;
}

TEST(RandomTest, FillsLargeAndEmptyBuffers) {
  std::string big(200000, '\0');
  auto span = absl::MakeSpan(reinterpret_cast<uint8_t*>(big.data()), big.size());
  ASSERT_TRUE(RandomBytes(span).ok());
  EXPECT_FALSE(AllEqual(span, 0));
  // Every 4 KiB draw is filled, not just the first.
  EXPECT_FALSE(AllEqual(span.subspan(big.size() - 64), 0));
  EXPECT_TRUE(RandomBytes({}).ok());
}

TEST(RandomTest, SecretsAreDistinctAndInTheSecureHeap) {
  absl::StatusOr<SecretBytes> a = RandomSecret(32);
  absl::StatusOr<SecretBytes> b = RandomSecret(32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(SecretEquals(*a, *b));
}

TEST(RandomTest, NoncesNeverRepeatAcrossRefills) {
  std::set<std::string> seen;
  for (int i = 0; i < 5000; ++i) {  // 5000 * 12 bytes crosses many 4 KiB refills
    std::array<uint8_t, 12> nonce{};
    ASSERT_TRUE(RandomNonce(absl::MakeSpan(nonce)).ok());
    EXPECT_TRUE(seen.emplace(nonce.begin(), nonce.end()).second);
  }
  std::array<uint8_t, 65> too_big{};
  EXPECT_EQ(ErrorCodeOf(RandomNonce(absl::MakeSpan(too_big))), ErrorCode::kInvalidArgument);
}

TEST(RandomTest, ForkedChildDoesNotRepeatParentNonces) {
  std::array<uint8_t, 12> warm{};
  ASSERT_TRUE(RandomNonce(absl::MakeSpan(warm)).ok());  // buffer now holds unused bytes
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::array<uint8_t, 12> nonce{};
    bool ok = RandomNonce(absl::MakeSpan(nonce)).ok();
    ok = ok && write(pipe_fds[1], nonce.data(), nonce.size()) == 12;
    _exit(ok ? 0 : 1);
  }
  close(pipe_fds[1]);
  std::array<uint8_t, 12> from_child{};
  ASSERT_EQ(read(pipe_fds[0], from_child.data(), from_child.size()), 12);
  close(pipe_fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::array<uint8_t, 12> from_parent{};
  ASSERT_TRUE(RandomNonce(absl::MakeSpan(from_parent)).ok());
  EXPECT_NE(from_child, from_parent);
}

// The design brief's randomness requirement: a PKCS#11 module that replaces OpenSSL's default
// RAND method (as SoftHSM2's RDRAND engine does) must not change where coffer's bytes come from.
TEST(RandomTest, StillUsesPrivateDrbgAfterModuleInstallsRandEngine) {
  void* module = dlopen(RAND_HIJACK_MODULE_PATH, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(module, nullptr) << dlerror();
  auto get_list =
      reinterpret_cast<CK_RV (*)(CK_FUNCTION_LIST_PTR_PTR)>(dlsym(module, "C_GetFunctionList"));
  ASSERT_NE(get_list, nullptr);
  CK_FUNCTION_LIST_PTR functions = nullptr;
  ASSERT_EQ(get_list(&functions), CKR_OK);
  ASSERT_EQ(functions->C_Initialize(nullptr), CKR_OK);

  // The hijack works on RAND_bytes: the default method now returns the engine's constant.
  std::array<uint8_t, 64> via_default{};
  ASSERT_EQ(RAND_bytes(via_default.data(), via_default.size()), 1);
  EXPECT_TRUE(AllEqual(via_default, 0x42)) << "the test engine did not take effect";

  std::array<uint8_t, 64> ours{};
  ASSERT_TRUE(RandomBytes(absl::MakeSpan(ours)).ok());
  EXPECT_FALSE(AllEqual(ours, 0x42));
  absl::StatusOr<SecretBytes> key = RandomSecret(32);
  ASSERT_TRUE(key.ok());
  EXPECT_FALSE(AllEqual(key->span(), 0x42));
  std::array<uint8_t, 64> nonce{};
  ASSERT_TRUE(RandomNonce(absl::MakeSpan(nonce)).ok());
  EXPECT_FALSE(AllEqual(nonce, 0x42));

  ASSERT_EQ(functions->C_Finalize(nullptr), CKR_OK);
  std::array<uint8_t, 64> restored{};
  ASSERT_EQ(RAND_bytes(restored.data(), restored.size()), 1);
  EXPECT_FALSE(AllEqual(restored, 0x42));
  dlclose(module);
}

}  // namespace
}  // namespace coffer::crypto
