#include "hsm/dataset_wrapping_keys.h"

#include <openssl/crypto.h>

#include <mutex>
#include <utility>

#include "crypto/base/status.h"
#include "hsm/internal/attributes.h"
#include "hsm/internal/ck_error.h"
#include "hsm/internal/key_operations.h"
#include "hsm/internal/labels.h"
#include "hsm/internal/session.h"

namespace coffer::hsm {
namespace {

using internal::AttributeList;
using internal::CkError;
using internal::CkErrorWithCode;
using internal::IsHandleInvalid;
using internal::ObjectId;
using internal::ObjectKind;

// Reads every attribute WrappingKeyAttributes reports, then tries (and is expected to fail) to
// read the key's value.
absl::StatusOr<WrappingKeyAttributes> ReadAttributes(CK_FUNCTION_LIST* f, CK_SESSION_HANDLE session,
                                                     CK_OBJECT_HANDLE handle, WrappingKeyId id) {
  WrappingKeyAttributes out;
  constexpr size_t kFlags = 11;
  CK_BBOOL flags[kFlags] = {};
  CK_ATTRIBUTE_TYPE types[kFlags] = {CKA_TOKEN,
                                     CKA_PRIVATE,
                                     CKA_SENSITIVE,
                                     CKA_EXTRACTABLE,
                                     CKA_ALWAYS_SENSITIVE,
                                     CKA_NEVER_EXTRACTABLE,
                                     CKA_WRAP,
                                     CKA_UNWRAP,
                                     CKA_ENCRYPT,
                                     CKA_DECRYPT,
                                     CKA_SIGN};
  CK_ATTRIBUTE attributes[kFlags];
  for (size_t i = 0; i < kFlags; ++i) attributes[i] = {types[i], &flags[i], sizeof(CK_BBOOL)};
  CK_RV rv = f->C_GetAttributeValue(session, handle, attributes, kFlags);
  if (rv != CKR_OK) return CkError("C_GetAttributeValue", rv, "inspecting " + id.ToString());
  bool* fields[kFlags] = {&out.token,
                          &out.is_private,
                          &out.sensitive,
                          &out.extractable,
                          &out.always_sensitive,
                          &out.never_extractable,
                          &out.wrap,
                          &out.unwrap,
                          &out.encrypt,
                          &out.decrypt,
                          &out.sign};
  for (size_t i = 0; i < kFlags; ++i) *fields[i] = flags[i] == CK_TRUE;

  char label[64];
  CK_ATTRIBUTE label_attribute = {CKA_LABEL, label, sizeof(label)};
  if (f->C_GetAttributeValue(session, handle, &label_attribute, 1) == CKR_OK) {
    out.label.assign(label, label_attribute.ulValueLen);
  }
  CK_MECHANISM_TYPE mechanisms[16];
  CK_ATTRIBUTE allowed = {CKA_ALLOWED_MECHANISMS, mechanisms, sizeof(mechanisms)};
  if (f->C_GetAttributeValue(session, handle, &allowed, 1) == CKR_OK) {
    out.allowed_mechanisms.assign(mechanisms,
                                  mechanisms + allowed.ulValueLen / sizeof(CK_MECHANISM_TYPE));
  }
  // The key must not reveal its value: this read is expected to fail.
  unsigned char value[64];
  CK_ATTRIBUTE value_attribute = {CKA_VALUE, value, sizeof(value)};
  rv = f->C_GetAttributeValue(session, handle, &value_attribute, 1);
  OPENSSL_cleanse(value, sizeof(value));
  out.value_read = rv == CKR_OK ? absl::OkStatus() : CkError("C_GetAttributeValue(CKA_VALUE)", rv);
  return out;
}

}  // namespace

void DatasetWrappingKeys::Rebuild(const std::vector<TokenObject>& objects) {
  std::map<WrappingKeyId, CK_OBJECT_HANDLE> dwks;
  for (const TokenObject& object : objects) {
    if (object.id.kind == ObjectKind::kDatasetWrappingKey &&
        object.object_class == CKO_SECRET_KEY) {
      dwks.emplace(WrappingKeyId{object.id.a, object.id.b}, object.handle);
    }
  }
  std::unique_lock<std::shared_mutex> lock(map_mu_);
  dwks_ = std::move(dwks);
}

std::optional<CK_OBJECT_HANDLE> DatasetWrappingKeys::Find(WrappingKeyId id) const {
  std::shared_lock<std::shared_mutex> lock(map_mu_);
  auto it = dwks_.find(id);
  if (it == dwks_.end()) return std::nullopt;
  return it->second;
}

absl::Status DatasetWrappingKeys::CreateWrappingKey(WrappingKeyId id) {
  std::unique_lock<std::mutex> changes = token_.LockObjectChanges();
  return token_.Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    if (Find(id)) {
      return MakeError(ErrorCode::kAlreadyExists,
                       "a wrapping key for " + id.ToString() + " already exists in the token");
    }
    ObjectId object{ObjectKind::kDatasetWrappingKey, id.dataset_handle, id.version};
    AttributeList attributes = internal::TokenSecretKey(object, CKK_AES);
    attributes.Ulong(CKA_VALUE_LEN, 32)
        .Bool(CKA_WRAP, true)
        .Bool(CKA_UNWRAP, true)
        .Bool(CKA_SIGN, false)
        .Bool(CKA_VERIFY, false)
        .Bool(CKA_MODIFIABLE, false)
        .Mechanisms(CKA_ALLOWED_MECHANISMS, {CKM_AES_KEY_WRAP});
    absl::StatusOr<CK_OBJECT_HANDLE> handle =
        internal::GenerateSecretKey(token_, session, CKM_AES_KEY_GEN, attributes);
    if (!handle.ok()) return handle.status();
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    dwks_[id] = *handle;
    destroyed_.erase(id);
    return absl::OkStatus();
  });
}

absl::StatusOr<WrappedKey> DatasetWrappingKeys::Wrap(WrappingKeyId id,
                                                     const crypto::SecretBytes& dek) {
  if (dek.size() != kDekBytes) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a data key to wrap must be 32 bytes, got " + std::to_string(dek.size()));
  }
  WrappedKey out;
  out.mechanism = kMechanismAesKeyWrap;
  out.key = id;
  absl::Status wrapped_in_token =
      token_.Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
        CK_FUNCTION_LIST* f = token_.functions();
        CK_OBJECT_HANDLE dwk = CK_INVALID_HANDLE;
        {
          std::shared_lock<std::shared_mutex> map_lock(map_mu_);
          auto it = dwks_.find(id);
          if (it == dwks_.end()) {
            if (destroyed_.contains(id)) {
              return MakeError(ErrorCode::kKeyDestroyed,
                               "the wrapping key for " + id.ToString() +
                                   " was destroyed; create a new version to wrap under");
            }
            return MakeError(ErrorCode::kHsmKeyNotFound,
                             "no wrapping key for " + id.ToString() +
                                 " in the token; create it first (or check the token label)");
          }
          dwk = it->second;
        }
        // The DEK enters the token as a short-lived session object, is wrapped, and is destroyed.
        AttributeList dek_template;
        dek_template.Ulong(CKA_CLASS, CKO_SECRET_KEY)
            .Ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
            .Bool(CKA_TOKEN, false)
            .Bool(CKA_PRIVATE, true)
            .Bool(CKA_SENSITIVE, true)
            .Bool(CKA_EXTRACTABLE, true)
            .Borrowed(CKA_VALUE, dek.data(), dek.size());
        CK_OBJECT_HANDLE dek_object = CK_INVALID_HANDLE;
        CK_RV rv =
            f->C_CreateObject(session, dek_template.data(), dek_template.size(), &dek_object);
        if (rv != CKR_OK) return CkError("C_CreateObject", rv, "loading a data key to wrap");
        internal::ScopedObject dek_guard(f, session, dek_object);
        CK_MECHANISM mechanism = {CKM_AES_KEY_WRAP, nullptr, 0};
        std::string wrapped(kDekBytes + 8, '\0');
        auto wrapped_len = static_cast<CK_ULONG>(wrapped.size());
        rv = f->C_WrapKey(session, &mechanism, dwk, dek_object,
                          reinterpret_cast<CK_BYTE*>(wrapped.data()), &wrapped_len);
        if (IsHandleInvalid(rv)) {
          return CkErrorWithCode(ErrorCode::kKeyDestroyed, "C_WrapKey", rv, id.ToString(),
                                 "the wrapping key is no longer in the token (destroyed outside "
                                 "coffer?); reconcile the key DB with the token");
        }
        if (rv != CKR_OK) {
          return CkError("C_WrapKey", rv, "wrapping a data key for " + id.ToString());
        }
        wrapped.resize(wrapped_len);
        out.wrapped = std::move(wrapped);
        return absl::OkStatus();
      });
  // The DEK entered the module below this frame (C_CreateObject, C_WrapKey): as in Unwrap.
  crypto::WipeStack();
  COFFER_RETURN_IF_ERROR(wrapped_in_token);
  return out;
}

absl::StatusOr<crypto::SecretBytes> DatasetWrappingKeys::Unwrap(const WrappedKey& blob) {
  if (blob.mechanism != kMechanismAesKeyWrap) {
    return MakeError(ErrorCode::kUnsupportedFormat,
                     "wrapped key names mechanism " + std::to_string(blob.mechanism) +
                         "; this coffer unwraps CKM_AES_KEY_WRAP only");
  }
  if (blob.wrapped.size() != kDekBytes + 8) {
    return MakeError(ErrorCode::kWrappedKeyCorrupt,
                     "wrapped key for " + blob.key.ToString() + " holds " +
                         std::to_string(blob.wrapped.size()) +
                         " bytes; a wrapped data key is 40; restore the key DB row from a backup");
  }
  crypto::SecretBytes dek;
  absl::Status unwrapped =
      token_.Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
        std::optional<CK_OBJECT_HANDLE> dwk = Find(blob.key);
        if (!dwk) {
          return MakeError(ErrorCode::kKeyDestroyed,
                           "the wrapping key for " + blob.key.ToString() +
                               " is not in the token: it was destroyed (or this is not the token "
                               "that wrapped the key), so this data key cannot be recovered");
        }
        COFFER_ASSIGN_OR_RETURN(dek, UnwrapInSession(session, *dwk, blob));
        return absl::OkStatus();
      });
  // The module's unwrap and attribute read ran below this frame: their stack temporaries can
  // hold the key (seen with SoftHSM2: kms_daemon_secrets_in_memory_test).
  crypto::WipeStack();
  COFFER_RETURN_IF_ERROR(unwrapped);
  return dek;
}

absl::StatusOr<crypto::SecretBytes> DatasetWrappingKeys::UnwrapInSession(CK_SESSION_HANDLE session,
                                                                         CK_OBJECT_HANDLE dwk,
                                                                         const WrappedKey& blob) {
  CK_FUNCTION_LIST* f = token_.functions();
  // Unwrap into a session object (CKA_TOKEN false), read it, destroy it at once.
  AttributeList dek_template;
  dek_template.Ulong(CKA_CLASS, CKO_SECRET_KEY)
      .Ulong(CKA_KEY_TYPE, CKK_GENERIC_SECRET)
      .Bool(CKA_TOKEN, false)
      .Bool(CKA_PRIVATE, true)
      .Bool(CKA_SENSITIVE, false)
      .Bool(CKA_EXTRACTABLE, true);
  CK_MECHANISM mechanism = {CKM_AES_KEY_WRAP, nullptr, 0};
  CK_OBJECT_HANDLE dek_object = CK_INVALID_HANDLE;
  CK_RV rv = f->C_UnwrapKey(session, &mechanism, dwk,
                            reinterpret_cast<CK_BYTE*>(const_cast<char*>(blob.wrapped.data())),
                            static_cast<CK_ULONG>(blob.wrapped.size()), dek_template.data(),
                            dek_template.size(), &dek_object);
  if (rv == CKR_GENERAL_ERROR) {
    // SoftHSM2 reports a failed RFC 3394 integrity check as CKR_GENERAL_ERROR. If the
    // session is still healthy, the blob is at fault, not the device.
    CK_SESSION_INFO info;
    if (f->C_GetSessionInfo(session, &info) == CKR_OK) {
      return CkErrorWithCode(ErrorCode::kWrappedKeyCorrupt, "C_UnwrapKey", rv, blob.key.ToString(),
                             "the wrapped key failed its integrity check (tampered, truncated "
                             "or wrapped by another key); restore the key DB row from a backup");
    }
    return CkErrorWithCode(ErrorCode::kHsmDeviceError, "C_UnwrapKey", rv, blob.key.ToString(),
                           "the token failed and its session is gone; reconnecting");
  }
  if (IsHandleInvalid(rv)) {
    return CkErrorWithCode(ErrorCode::kKeyDestroyed, "C_UnwrapKey", rv, blob.key.ToString(),
                           "the wrapping key is no longer in the token (destroyed outside "
                           "coffer?); this data key cannot be recovered");
  }
  if (rv != CKR_OK) return CkError("C_UnwrapKey", rv, blob.key.ToString());
  internal::ScopedObject dek_guard(f, session, dek_object);
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes value, crypto::SecretBytes::Allocate(kDekBytes));
  CK_ATTRIBUTE read = {CKA_VALUE, value.data(), static_cast<CK_ULONG>(value.size())};
  rv = f->C_GetAttributeValue(session, dek_object, &read, 1);
  if (rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && read.ulValueLen != kDekBytes)) {
    return MakeError(ErrorCode::kWrappedKeyCorrupt, "the wrapped key for " + blob.key.ToString() +
                                                        " did not unwrap to a 32-byte data key");
  }
  if (rv != CKR_OK) return CkError("C_GetAttributeValue", rv, "reading an unwrapped data key");
  return value;
}

absl::Status DatasetWrappingKeys::DestroyWrappingKey(WrappingKeyId id) {
  std::unique_lock<std::mutex> changes = token_.LockObjectChanges();
  return token_.Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    std::optional<CK_OBJECT_HANDLE> handle = Find(id);
    if (!handle) {
      return MakeError(ErrorCode::kHsmKeyNotFound,
                       "no wrapping key for " + id.ToString() + " in the token to destroy");
    }
    CK_RV rv = token_.functions()->C_DestroyObject(session, *handle);
    // Already gone (destroyed outside coffer) is what was asked for.
    if (rv != CKR_OK && !IsHandleInvalid(rv)) {
      return CkError("C_DestroyObject", rv, "destroying the wrapping key for " + id.ToString());
    }
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    dwks_.erase(id);
    destroyed_.insert(id);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<WrappingKeyId>> DatasetWrappingKeys::ListWrappingKeys() {
  COFFER_RETURN_IF_ERROR(token_.CheckOpen());
  std::shared_lock<std::shared_mutex> map_lock(map_mu_);
  std::vector<WrappingKeyId> ids;
  ids.reserve(dwks_.size());
  for (const auto& [id, handle] : dwks_) ids.push_back(id);
  return ids;
}

absl::StatusOr<WrappingKeyAttributes> DatasetWrappingKeys::InspectWrappingKey(WrappingKeyId id) {
  WrappingKeyAttributes out;
  COFFER_RETURN_IF_ERROR(
      token_.Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
        std::optional<CK_OBJECT_HANDLE> handle = Find(id);
        if (!handle) {
          return MakeError(ErrorCode::kHsmKeyNotFound, "no wrapping key for " + id.ToString());
        }
        COFFER_ASSIGN_OR_RETURN(out, ReadAttributes(token_.functions(), session, *handle, id));
        return absl::OkStatus();
      }));
  return out;
}

}  // namespace coffer::hsm
