// Wycheproof's AES key-wrap vectors (aes_wrap_test.json) through the token's CKM_AES_KEY_WRAP:
// each test KEK is imported as a session object; valid cases must wrap and unwrap to the
// expected bytes, invalid ones must be refused.

#include <memory>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/internal/session.h"
#include "hsm/module.h"
#include "hsm/pin.h"
#include "tests/hsm/softhsm_token.h"
#include "tests/testing/vectors.h"

namespace coffer::hsm {
namespace {

using ::coffer::hsm::testing::SoftHsmToken;

class WycheproofKeyWrapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<SoftHsmToken>> token = SoftHsmToken::Create("wycheproof");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = *std::move(token);
    absl::StatusOr<Module> module = Module::Load(kDefaultModulePath);
    ASSERT_TRUE(module.ok()) << module.status();
    module_ = std::make_unique<Module>(*std::move(module));
    CK_FUNCTION_LIST* f = module_->functions();
    CK_SLOT_ID slots[8];
    CK_ULONG count = 8;
    ASSERT_EQ(f->C_GetSlotList(CK_TRUE, slots, &count), CKR_OK);
    ASSERT_GE(count, 1u);
    absl::StatusOr<internal::Session> session = internal::Session::Open(f, slots[0]);
    ASSERT_TRUE(session.ok()) << session.status();
    session_ = std::make_unique<internal::Session>(*std::move(session));
    absl::StatusOr<crypto::SecretBytes> pin = PinSource::FromFile(token_->pin_file()).ReadPin();
    ASSERT_TRUE(pin.ok());
    ASSERT_EQ(f->C_Login(session_->handle(), CKU_USER, pin->data(), pin->size()), CKR_OK);
  }
  static void TearDownTestSuite() {
    session_.reset();
    if (module_) {
      EXPECT_TRUE(module_->Close().ok());
    }
    module_.reset();
    token_.reset();
  }

  // Imports `value` as a session secret key object.
  static CK_OBJECT_HANDLE Import(const std::string& value, CK_KEY_TYPE type, bool kek) {
    CK_OBJECT_CLASS object_class = CKO_SECRET_KEY;
    CK_BBOOL yes = CK_TRUE;
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE attributes[] = {
        {CKA_CLASS, &object_class, sizeof(object_class)},
        {CKA_KEY_TYPE, &type, sizeof(type)},
        {CKA_TOKEN, &no, sizeof(no)},
        {CKA_SENSITIVE, &no, sizeof(no)},
        {CKA_EXTRACTABLE, &yes, sizeof(yes)},
        {CKA_WRAP, kek ? &yes : &no, sizeof(yes)},
        {CKA_UNWRAP, kek ? &yes : &no, sizeof(yes)},
        {CKA_VALUE, const_cast<char*>(value.data()), value.size()},
    };
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
    CK_RV rv = module_->functions()->C_CreateObject(session_->handle(), attributes,
                                                    std::size(attributes), &handle);
    return rv == CKR_OK ? handle : CK_INVALID_HANDLE;
  }

  static inline std::unique_ptr<SoftHsmToken> token_;
  static inline std::unique_ptr<Module> module_;
  static inline std::unique_ptr<internal::Session> session_;
};

TEST_F(WycheproofKeyWrapTest, AesWrapVectorsThroughTheToken) {
  nlohmann::json file = coffer::testing::LoadVectorFile("wycheproof/aes_wrap_test.json");
  ASSERT_FALSE(file.is_null());
  CK_FUNCTION_LIST* f = module_->functions();
  CK_SESSION_HANDLE session = session_->handle();
  CK_MECHANISM mechanism = {CKM_AES_KEY_WRAP, nullptr, 0};
  int valid = 0;
  int invalid = 0;
  for (const auto& group : file["testGroups"]) {
    for (const auto& test : group["tests"]) {
      const int id = test["tcId"].get<int>();
      const std::string result = test["result"].get<std::string>();
      const std::string key = coffer::testing::HexToBytes(test["key"].get<std::string>());
      const std::string msg = coffer::testing::HexToBytes(test["msg"].get<std::string>());
      std::string ct = coffer::testing::HexToBytes(test["ct"].get<std::string>());
      SCOPED_TRACE("tcId " + std::to_string(id) + " (" + result + ")");

      CK_OBJECT_HANDLE kek_handle = Import(key, CKK_AES, /*kek=*/true);
      ASSERT_NE(kek_handle, CK_INVALID_HANDLE);
      internal::ScopedObject kek(f, session, kek_handle);

      // Unwrap ct into a session object and read it back.
      CK_OBJECT_CLASS object_class = CKO_SECRET_KEY;
      CK_KEY_TYPE key_type = CKK_GENERIC_SECRET;
      CK_BBOOL yes = CK_TRUE;
      CK_BBOOL no = CK_FALSE;
      CK_ATTRIBUTE unwrap_template[] = {{CKA_CLASS, &object_class, sizeof(object_class)},
                                        {CKA_KEY_TYPE, &key_type, sizeof(key_type)},
                                        {CKA_TOKEN, &no, sizeof(no)},
                                        {CKA_SENSITIVE, &no, sizeof(no)},
                                        {CKA_EXTRACTABLE, &yes, sizeof(yes)}};
      std::string ct_buffer = ct + '\0';  // never hand the token a null pointer
      CK_OBJECT_HANDLE unwrapped = CK_INVALID_HANDLE;
      CK_RV unwrap_rv = f->C_UnwrapKey(session, &mechanism, kek.get(),
                                       reinterpret_cast<CK_BYTE*>(ct_buffer.data()), ct.size(),
                                       unwrap_template, std::size(unwrap_template), &unwrapped);
      std::string recovered;
      if (unwrap_rv == CKR_OK) {
        internal::ScopedObject guard(f, session, unwrapped);
        std::string value(1024, '\0');
        CK_ATTRIBUTE read = {CKA_VALUE, value.data(), value.size()};
        ASSERT_EQ(f->C_GetAttributeValue(session, unwrapped, &read, 1), CKR_OK);
        recovered = value.substr(0, read.ulValueLen);
      }

      // Wrap msg (when it can be a key object at all) and compare with ct.
      std::string wrapped;
      CK_RV wrap_rv = CKR_FUNCTION_FAILED;
      if (!msg.empty()) {
        CK_OBJECT_HANDLE target_handle = Import(msg, CKK_GENERIC_SECRET, /*kek=*/false);
        ASSERT_NE(target_handle, CK_INVALID_HANDLE);
        internal::ScopedObject target(f, session, target_handle);
        std::string out(msg.size() + 64, '\0');
        CK_ULONG out_len = out.size();
        wrap_rv = f->C_WrapKey(session, &mechanism, kek.get(), target.get(),
                               reinterpret_cast<CK_BYTE*>(out.data()), &out_len);
        if (wrap_rv == CKR_OK) wrapped = out.substr(0, out_len);
      }

      if (result == "valid") {
        ++valid;
        EXPECT_EQ(unwrap_rv, CKR_OK);
        EXPECT_EQ(recovered, msg);
        EXPECT_EQ(wrap_rv, CKR_OK);
        EXPECT_EQ(wrapped, ct);
      } else if (result == "invalid") {
        ++invalid;
        EXPECT_NE(unwrap_rv, CKR_OK) << "the token accepted an invalid wrapped key";
        if (wrap_rv == CKR_OK) {
          EXPECT_NE(wrapped, ct);
        }
      } else {  // acceptable: either outcome, but a success must be correct
        if (unwrap_rv == CKR_OK) {
          EXPECT_EQ(recovered, msg);
        }
        if (wrap_rv == CKR_OK) {
          EXPECT_EQ(wrapped, ct);
        }
      }
    }
  }
  EXPECT_GT(valid, 30);
  EXPECT_GT(invalid, 100);
}

}  // namespace
}  // namespace coffer::hsm
