#include "hsm/totp_secrets.h"

#include <cstring>
#include <mutex>
#include <string>

#include "crypto/base/status.h"
#include "hsm/internal/attributes.h"
#include "hsm/internal/ck_error.h"
#include "hsm/internal/key_operations.h"
#include "hsm/internal/labels.h"

namespace coffer::hsm {
namespace {

using internal::CkError;
using internal::ObjectId;
using internal::ObjectKind;

std::string EncodeCounter(uint64_t counter) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(counter & 0xff);
    counter >>= 8;
  }
  return out;
}

absl::Status NoSecretError(uint64_t admin_id) {
  return MakeError(ErrorCode::kHsmKeyNotFound,
                   "admin " + std::to_string(admin_id) + " has no TOTP secret in the token");
}

}  // namespace

void TotpSecrets::Rebuild(const std::vector<TokenObject>& objects) {
  std::map<uint64_t, CK_OBJECT_HANDLE> secrets;
  for (const TokenObject& object : objects) {
    if (object.id.kind == ObjectKind::kTotpSecret && object.object_class == CKO_SECRET_KEY) {
      secrets.emplace(object.id.a, object.handle);
    }
  }
  std::unique_lock<std::shared_mutex> lock(map_mu_);
  secrets_ = std::move(secrets);
}

std::optional<CK_OBJECT_HANDLE> TotpSecrets::Find(uint64_t admin_id) const {
  std::shared_lock<std::shared_mutex> lock(map_mu_);
  auto it = secrets_.find(admin_id);
  if (it == secrets_.end()) return std::nullopt;
  return it->second;
}

absl::Status TotpSecrets::ImportTotpSecret(uint64_t admin_id, const crypto::SecretBytes& secret) {
  if (secret.size() < 20 || secret.size() > 64) {
    return MakeError(ErrorCode::kInvalidArgument, "a TOTP secret must be 20 to 64 bytes");
  }
  std::unique_lock<std::mutex> changes = token_.LockObjectChanges();
  return token_.Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    if (Find(admin_id)) {
      return MakeError(ErrorCode::kAlreadyExists, "admin " + std::to_string(admin_id) +
                                                      " already has a TOTP secret in the token");
    }
    internal::AttributeList attributes =
        internal::TokenSecretKey(ObjectId{ObjectKind::kTotpSecret, admin_id}, CKK_GENERIC_SECRET);
    attributes.Bool(CKA_SIGN, true)
        .Bool(CKA_VERIFY, false)
        .Bool(CKA_WRAP, false)
        .Bool(CKA_UNWRAP, false)
        .Borrowed(CKA_VALUE, secret.data(), secret.size())
        .Mechanisms(CKA_ALLOWED_MECHANISMS, {CKM_SHA_1_HMAC});
    if (!token_.allowed_mechanisms_supported()) attributes.Remove(CKA_ALLOWED_MECHANISMS);
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
    CK_RV rv =
        token_.functions()->C_CreateObject(session, attributes.data(), attributes.size(), &handle);
    if (rv != CKR_OK) {
      return CkError("C_CreateObject", rv,
                     "storing the TOTP secret of admin " + std::to_string(admin_id));
    }
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    secrets_[admin_id] = handle;
    return absl::OkStatus();
  });
}

absl::StatusOr<std::array<uint8_t, 20>> TotpSecrets::TotpHmac(uint64_t admin_id, uint64_t counter) {
  std::array<uint8_t, 20> out{};
  COFFER_RETURN_IF_ERROR(
      token_.Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
        std::optional<CK_OBJECT_HANDLE> key = Find(admin_id);
        if (!key) return NoSecretError(admin_id);
        COFFER_ASSIGN_OR_RETURN(std::string mac,
                                internal::SignWithKey(token_.functions(), session, CKM_SHA_1_HMAC,
                                                      *key, EncodeCounter(counter), 20));
        if (mac.size() != out.size()) {
          return MakeError(ErrorCode::kHsmDeviceError, "the token returned a short HMAC-SHA1");
        }
        std::memcpy(out.data(), mac.data(), out.size());
        return absl::OkStatus();
      }));
  return out;
}

absl::Status TotpSecrets::DestroyTotpSecret(uint64_t admin_id) {
  std::unique_lock<std::mutex> changes = token_.LockObjectChanges();
  return token_.Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    std::optional<CK_OBJECT_HANDLE> handle = Find(admin_id);
    if (!handle) return NoSecretError(admin_id);
    CK_RV rv = token_.functions()->C_DestroyObject(session, *handle);
    if (rv != CKR_OK && !internal::IsHandleInvalid(rv)) {
      return CkError("C_DestroyObject", rv,
                     "destroying the TOTP secret of admin " + std::to_string(admin_id));
    }
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    secrets_.erase(admin_id);
    return absl::OkStatus();
  });
}

}  // namespace coffer::hsm
