#include "hsm/row_hmac_key.h"

#include <cstring>
#include <mutex>
#include <string>

#include "crypto/base/status.h"
#include "hsm/internal/attributes.h"
#include "hsm/internal/key_operations.h"
#include "hsm/internal/labels.h"

namespace coffer::hsm {
namespace {

using internal::ObjectId;
using internal::ObjectKind;

}  // namespace

void RowHmacKey::Rebuild(const std::vector<TokenObject>& objects) {
  std::optional<CK_OBJECT_HANDLE> key;
  for (const TokenObject& object : objects) {
    if (object.id.kind == ObjectKind::kRowHmacKey && object.object_class == CKO_SECRET_KEY) {
      key = object.handle;
      break;
    }
  }
  std::unique_lock<std::shared_mutex> lock(map_mu_);
  key_ = key;
}

// Lock order: the Token's object-changes lock, its connection lock (inside Run), then map_mu_.
absl::Status RowHmacKey::EnsureKey() {
  {
    std::shared_lock<std::shared_mutex> map_lock(map_mu_);
    if (key_) return absl::OkStatus();
  }
  std::unique_lock<std::mutex> changes = token_.LockObjectChanges();
  return token_.Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (key_) return absl::OkStatus();
    }
    internal::AttributeList attributes =
        internal::TokenSecretKey(ObjectId{ObjectKind::kRowHmacKey}, CKK_GENERIC_SECRET);
    attributes.Ulong(CKA_VALUE_LEN, 32)
        .Bool(CKA_SIGN, true)
        .Bool(CKA_VERIFY, true)
        .Bool(CKA_WRAP, false)
        .Bool(CKA_UNWRAP, false)
        .Mechanisms(CKA_ALLOWED_MECHANISMS, {CKM_SHA256_HMAC});
    COFFER_ASSIGN_OR_RETURN(
        CK_OBJECT_HANDLE handle,
        internal::GenerateSecretKey(token_, session, CKM_GENERIC_SECRET_KEY_GEN, attributes));
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    key_ = handle;
    return absl::OkStatus();
  });
}

absl::StatusOr<std::array<uint8_t, 32>> RowHmacKey::HmacRowKey(std::string_view data) {
  COFFER_RETURN_IF_ERROR(EnsureKey());
  std::array<uint8_t, 32> out{};
  COFFER_RETURN_IF_ERROR(
      token_.Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
        CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
        {
          std::shared_lock<std::shared_mutex> map_lock(map_mu_);
          if (!key_) return MakeError(ErrorCode::kHsmKeyNotFound, "no row HMAC key");
          key = *key_;
        }
        COFFER_ASSIGN_OR_RETURN(
            std::string mac,
            internal::SignWithKey(token_.functions(), session, CKM_SHA256_HMAC, key, data, 32));
        if (mac.size() != out.size()) {
          return MakeError(ErrorCode::kHsmDeviceError, "the token returned a short HMAC-SHA256");
        }
        std::memcpy(out.data(), mac.data(), out.size());
        return absl::OkStatus();
      }));
  return out;
}

}  // namespace coffer::hsm
