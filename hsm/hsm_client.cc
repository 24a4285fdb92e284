#include "hsm/hsm_client.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <cstring>
#include <utility>

#include "crypto/base/status.h"
#include "hsm/internal/attributes.h"
#include "hsm/internal/ck_error.h"
#include "hsm/internal/labels.h"
#include "hsm/internal/session.h"

namespace coffer::hsm {
namespace {

using internal::AttributeList;
using internal::CkError;
using internal::CkErrorWithCode;
using internal::ObjectId;
using internal::ObjectKind;

// DER of the OID prime256v1 / secp256r1 (1.2.840.10045.3.1.7), the CKA_EC_PARAMS value.
constexpr unsigned char kP256Params[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                         0xce, 0x3d, 0x03, 0x01, 0x07};
constexpr size_t kEnumerationBatch = 512;

std::string Trimmed(const unsigned char* field, size_t size) {
  std::string text(reinterpret_cast<const char*>(field), size);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\0')) text.pop_back();
  return text;
}

absl::Status ClosedError() {
  return MakeError(ErrorCode::kFailedPrecondition, "the HSM client is closed");
}

bool IsConnectionError(const absl::Status& status) {
  ErrorCode code = ErrorCodeOf(status);
  return code == ErrorCode::kHsmSessionError || code == ErrorCode::kHsmDeviceError;
}

bool IsHandleInvalid(CK_RV rv) {
  return rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID ||
         rv == CKR_WRAPPING_KEY_HANDLE_INVALID || rv == CKR_UNWRAPPING_KEY_HANDLE_INVALID;
}

std::string EncodeCounter(uint64_t counter) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(counter & 0xff);
    counter >>= 8;
  }
  return out;
}

// Common attributes of a secret key that lives in the token and never leaves it.
AttributeList TokenSecretKey(const ObjectId& id, CK_KEY_TYPE key_type) {
  AttributeList attributes;
  attributes.Ulong(CKA_CLASS, CKO_SECRET_KEY)
      .Ulong(CKA_KEY_TYPE, key_type)
      .Bool(CKA_TOKEN, true)
      .Bool(CKA_PRIVATE, true)
      .Bool(CKA_SENSITIVE, true)
      .Bool(CKA_EXTRACTABLE, false)
      .Bool(CKA_ENCRYPT, false)
      .Bool(CKA_DECRYPT, false)
      .Bool(CKA_DERIVE, false)
      .Bytes(CKA_LABEL, internal::ObjectLabel(id))
      .Bytes(CKA_ID, internal::EncodeObjectId(id));
  return attributes;
}

// Converts the token's raw r||s (64 bytes for P-256) to a DER ECDSA-Sig-Value.
absl::StatusOr<std::string> RawEcdsaToDer(std::string_view raw) {
  if (raw.size() != 64) {
    return MakeError(ErrorCode::kHsmDeviceError,
                     "the token returned a " + std::to_string(raw.size()) +
                         "-byte ECDSA signature; P-256 signatures are 64 bytes (r||s)");
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
  BIGNUM* r = BN_bin2bn(bytes, 32, nullptr);
  BIGNUM* s = BN_bin2bn(bytes + 32, 32, nullptr);
  ECDSA_SIG* sig = ECDSA_SIG_new();
  if (r == nullptr || s == nullptr || sig == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return MakeError(ErrorCode::kCryptoLibraryError, "ECDSA_SIG_set0 failed");
  }
  unsigned char* der = nullptr;
  int der_len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (der_len <= 0) return MakeError(ErrorCode::kCryptoLibraryError, "i2d_ECDSA_SIG failed");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(der_len));
  OPENSSL_free(der);
  return out;
}

// CKA_EC_POINT is a DER OCTET STRING holding the uncompressed point (some modules omit the
// wrapper); returns a PEM SubjectPublicKeyInfo.
absl::StatusOr<std::string> EcPointToPem(std::string_view ec_point) {
  std::string point(ec_point);
  if (point.size() == 67 && static_cast<uint8_t>(point[0]) == 0x04 &&
      static_cast<uint8_t>(point[1]) == 65) {
    point = point.substr(2);
  }
  if (point.size() != 65 || static_cast<uint8_t>(point[0]) != 0x04) {
    return MakeError(ErrorCode::kHsmDeviceError,
                     "the token's CKA_EC_POINT is not an uncompressed P-256 point");
  }
  OSSL_PARAM_BLD* builder = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* ctx = nullptr;
  EVP_PKEY* pkey = nullptr;
  BIO* bio = nullptr;
  std::string pem;
  bool ok =
      builder != nullptr &&
      OSSL_PARAM_BLD_push_utf8_string(builder, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
      OSSL_PARAM_BLD_push_octet_string(builder, OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) == 1 &&
      (params = OSSL_PARAM_BLD_to_param(builder)) != nullptr &&
      (ctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr)) != nullptr &&
      EVP_PKEY_fromdata_init(ctx) == 1 &&
      EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1 &&
      (bio = BIO_new(BIO_s_mem())) != nullptr && PEM_write_bio_PUBKEY(bio, pkey) == 1;
  if (ok) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    pem.assign(data, static_cast<size_t>(len));
  }
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(builder);
  if (!ok) {
    return MakeError(ErrorCode::kCryptoLibraryError,
                     "OpenSSL could not encode the token's public key as PEM");
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HsmClient>> HsmClient::Open(const HsmOptions& options) {
  if (options.token_label.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "no HSM token label configured");
  }
  // The PIN first: a configuration mistake should not cost a module load.
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes pin, options.pin.ReadPin());
  COFFER_ASSIGN_OR_RETURN(Module module, Module::Load(options.module_path));
  std::unique_ptr<HsmClient> client(new HsmClient(std::move(module), options, std::move(pin)));
  {
    std::unique_lock<std::shared_mutex> lock(client->conn_mu_);
    COFFER_RETURN_IF_ERROR(client->Connect());
  }
  return client;
}

HsmClient::HsmClient(Module module, HsmOptions options, crypto::SecretBytes pin)
    : module_(std::move(module)), options_(std::move(options)), pin_(std::move(pin)) {}

HsmClient::~HsmClient() { (void)Close(); }

absl::Status HsmClient::Close() {
  std::unique_lock<std::shared_mutex> lock(conn_mu_);
  if (closed_) return absl::OkStatus();
  closed_ = true;
  connected_ = false;
  pool_.reset();
  if (module_.is_open()) (void)module_.functions()->C_CloseAllSessions(slot_);
  return module_.Close();
}

absl::Status HsmClient::Connect() {
  CK_FUNCTION_LIST* f = module_.functions();
  pool_.reset();
  connected_ = false;

  // 1. The slot whose token carries our label.
  CK_ULONG count = 0;
  CK_RV rv = f->C_GetSlotList(CK_TRUE, nullptr, &count);
  if (rv != CKR_OK) return CkError("C_GetSlotList", rv, "listing the module's tokens");
  std::vector<CK_SLOT_ID> slots(count);
  rv = f->C_GetSlotList(CK_TRUE, slots.data(), &count);
  if (rv != CKR_OK) return CkError("C_GetSlotList", rv, "listing the module's tokens");
  slots.resize(count);
  std::optional<CK_SLOT_ID> found;
  std::string seen;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info;
    if (f->C_GetTokenInfo(slot, &info) != CKR_OK) continue;
    if ((info.flags & CKF_TOKEN_INITIALIZED) == 0) continue;
    std::string label = Trimmed(info.label, sizeof(info.label));
    if (label == options_.token_label) {
      found = slot;
      break;
    }
    seen += (seen.empty() ? "'" : ", '") + label + "'";
  }
  if (!found) {
    return MakeError(ErrorCode::kHsmTokenNotFound,
                     "no token labelled '" + options_.token_label + "' in PKCS#11 module " +
                         module_.path() + " (tokens present: " + (seen.empty() ? "none" : seen) +
                         "); create it (scripts/softhsm-token) or fix the token label, and for "
                         "SoftHSM2 check SOFTHSM2_CONF");
  }
  slot_ = *found;

  // 2. The mechanisms every request needs.
  for (auto [mechanism, flags, name] :
       {std::tuple{CKM_AES_KEY_GEN, CK_FLAGS{CKF_GENERATE}, "CKM_AES_KEY_GEN"},
        std::tuple{CKM_AES_KEY_WRAP, CK_FLAGS{CKF_WRAP | CKF_UNWRAP}, "CKM_AES_KEY_WRAP"}}) {
    CK_MECHANISM_INFO info;
    rv = f->C_GetMechanismInfo(slot_, mechanism, &info);
    if (rv != CKR_OK || (info.flags & flags) != flags || info.ulMaxKeySize < 32) {
      return MakeError(ErrorCode::kHsmMechanismUnsupported,
                       std::string("token '") + options_.token_label + "' does not offer " + name +
                           " with 256-bit keys; coffer needs it for dataset wrapping keys — use "
                           "a token that does");
    }
  }

  // 3. Sessions, and one login for all of them.
  pool_ = std::make_unique<internal::SessionPool>(f, slot_, options_.session_pool_size);
  COFFER_ASSIGN_OR_RETURN(internal::SessionPool::Lease lease, pool_->Acquire());
  rv = f->C_Login(lease.handle(), CKU_USER, const_cast<CK_UTF8CHAR*>(pin_.data()),
                  static_cast<CK_ULONG>(pin_.size()));
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    return CkError("C_Login", rv,
                   "token '" + options_.token_label + "', PIN from " + options_.pin.Describe());
  }

  // 4. One enumeration: the handle map.
  COFFER_ASSIGN_OR_RETURN(HandleMap map, Enumerate(lease.handle()));
  {
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    map_ = std::move(map);
  }
  connected_ = true;
  ++generation_;
  return absl::OkStatus();
}

absl::StatusOr<HsmClient::HandleMap> HsmClient::Enumerate(CK_SESSION_HANDLE session) {
  CK_FUNCTION_LIST* f = module_.functions();
  AttributeList search;
  search.Bool(CKA_TOKEN, true);
  CK_RV rv = f->C_FindObjectsInit(session, search.data(), search.size());
  if (rv != CKR_OK) return CkError("C_FindObjectsInit", rv, "enumerating the token's keys");
  std::vector<CK_OBJECT_HANDLE> handles;
  std::vector<CK_OBJECT_HANDLE> batch(kEnumerationBatch);
  for (;;) {
    CK_ULONG got = 0;
    rv = f->C_FindObjects(session, batch.data(), static_cast<CK_ULONG>(batch.size()), &got);
    if (rv != CKR_OK) break;
    handles.insert(handles.end(), batch.begin(), batch.begin() + static_cast<ptrdiff_t>(got));
    if (got < batch.size()) break;
  }
  CK_RV final_rv = f->C_FindObjectsFinal(session);
  if (rv != CKR_OK) return CkError("C_FindObjects", rv, "enumerating the token's keys");
  if (final_rv != CKR_OK) return CkError("C_FindObjectsFinal", final_rv, "enumerating keys");

  HandleMap map;
  for (CK_OBJECT_HANDLE handle : handles) {
    CK_OBJECT_CLASS object_class = 0;
    char id[internal::kObjectIdBytes];
    CK_ATTRIBUTE attributes[] = {{CKA_CLASS, &object_class, sizeof(object_class)},
                                 {CKA_ID, id, sizeof(id)}};
    rv = f->C_GetAttributeValue(session, handle, attributes, 2);
    // Objects without a 16-byte CKA_ID (BUFFER_TOO_SMALL, TYPE_INVALID) are not coffer's.
    if (rv != CKR_OK) {
      if (internal::IsConnectionLoss(rv)) return CkError("C_GetAttributeValue", rv, "enumerating");
      continue;
    }
    if (attributes[1].ulValueLen != sizeof(id)) continue;
    std::optional<ObjectId> decoded = internal::DecodeObjectId(std::string_view(id, sizeof(id)));
    if (!decoded) continue;
    switch (decoded->kind) {
      case ObjectKind::kDatasetWrappingKey:
        if (object_class == CKO_SECRET_KEY) {
          map.dwks.emplace(WrappingKeyId{decoded->a, decoded->b}, handle);
        }
        break;
      case ObjectKind::kSigningKey:
        if (object_class == CKO_PRIVATE_KEY && !map.signing_private) map.signing_private = handle;
        if (object_class == CKO_PUBLIC_KEY && !map.signing_public) map.signing_public = handle;
        break;
      case ObjectKind::kRowHmacKey:
        if (object_class == CKO_SECRET_KEY && !map.row_hmac) map.row_hmac = handle;
        break;
      case ObjectKind::kTotpSecret:
        if (object_class == CKO_SECRET_KEY) map.totp.emplace(decoded->a, handle);
        break;
    }
  }
  return map;
}

absl::Status HsmClient::Reconnect(uint64_t generation) {
  std::unique_lock<std::shared_mutex> lock(conn_mu_);
  if (closed_) return ClosedError();
  if (connected_ && generation_ != generation) return absl::OkStatus();  // someone else did
  reconnects_.fetch_add(1);
  pool_.reset();
  (void)module_.functions()->C_CloseAllSessions(slot_);
  return Connect();
}

absl::Status HsmClient::Run(bool idempotent, const SessionOp& op) {
  absl::Status result =
      MakeError(ErrorCode::kHsmSessionError, "the HSM client lost its connection to the token");
  for (int attempt = 0;; ++attempt) {
    uint64_t generation = 0;
    bool ran = false;
    {
      std::shared_lock<std::shared_mutex> lock(conn_mu_);
      if (closed_) return ClosedError();
      generation = generation_;
      if (connected_) {
        absl::StatusOr<internal::SessionPool::Lease> lease = pool_->Acquire();
        ran = lease.ok();
        result = ran ? op(lease->handle()) : lease.status();
        if (!IsConnectionError(result)) return result;
        if (ran) lease->Discard();
      }
    }
    // The session or device is gone: reopen sessions, log in again, rebuild the map.
    COFFER_RETURN_IF_ERROR(Reconnect(generation));
    if (attempt >= 1 || (ran && !idempotent)) return result;
  }
}

absl::StatusOr<CK_OBJECT_HANDLE> HsmClient::GenerateSecretKey(CK_SESSION_HANDLE session,
                                                              CK_MECHANISM_TYPE mechanism,
                                                              AttributeList& attributes) {
  CK_FUNCTION_LIST* f = module_.functions();
  CK_MECHANISM mech = {mechanism, nullptr, 0};
  if (!allowed_mechanisms_supported_.load()) attributes.Remove(CKA_ALLOWED_MECHANISMS);
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  CK_RV rv = f->C_GenerateKey(session, &mech, attributes.data(), attributes.size(), &handle);
  if (rv == CKR_ATTRIBUTE_TYPE_INVALID && allowed_mechanisms_supported_.load()) {
    // A token without CKA_ALLOWED_MECHANISMS: the key's CKA_WRAP/CKA_SIGN flags still bound it.
    allowed_mechanisms_supported_.store(false);
    attributes.Remove(CKA_ALLOWED_MECHANISMS);
    rv = f->C_GenerateKey(session, &mech, attributes.data(), attributes.size(), &handle);
  }
  if (rv != CKR_OK) return CkError("C_GenerateKey", rv, "creating a key in the token");
  return handle;
}

absl::StatusOr<std::string> HsmClient::SignRaw(CK_SESSION_HANDLE session,
                                               CK_MECHANISM_TYPE mechanism, CK_OBJECT_HANDLE key,
                                               std::string_view data, size_t max_out) {
  CK_FUNCTION_LIST* f = module_.functions();
  CK_MECHANISM mech = {mechanism, nullptr, 0};
  CK_RV rv = f->C_SignInit(session, &mech, key);
  if (rv != CKR_OK) return CkError("C_SignInit", rv, "signing with a token key");
  std::string out(max_out, '\0');
  auto out_len = static_cast<CK_ULONG>(out.size());
  rv = f->C_Sign(session, reinterpret_cast<CK_BYTE*>(const_cast<char*>(data.data())),
                 static_cast<CK_ULONG>(data.size()), reinterpret_cast<CK_BYTE*>(out.data()),
                 &out_len);
  if (rv != CKR_OK) return CkError("C_Sign", rv, "signing with a token key");
  out.resize(out_len);
  return out;
}

// ---- Dataset wrapping keys -----------------------------------------------------------------

absl::Status HsmClient::CreateWrappingKey(WrappingKeyId id) {
  std::lock_guard<std::mutex> create_lock(create_mu_);
  return Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (map_.dwks.contains(id)) {
        return MakeError(ErrorCode::kAlreadyExists,
                         "a wrapping key for " + id.ToString() + " already exists in the token");
      }
    }
    ObjectId object{ObjectKind::kDatasetWrappingKey, id.dataset_handle, id.version};
    AttributeList attributes = TokenSecretKey(object, CKK_AES);
    attributes.Ulong(CKA_VALUE_LEN, 32)
        .Bool(CKA_WRAP, true)
        .Bool(CKA_UNWRAP, true)
        .Bool(CKA_SIGN, false)
        .Bool(CKA_VERIFY, false)
        .Bool(CKA_MODIFIABLE, false)
        .Mechanisms(CKA_ALLOWED_MECHANISMS, {CKM_AES_KEY_WRAP});
    absl::StatusOr<CK_OBJECT_HANDLE> handle =
        GenerateSecretKey(session, CKM_AES_KEY_GEN, attributes);
    if (!handle.ok()) return handle.status();
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    map_.dwks[id] = *handle;
    destroyed_.erase(id);
    return absl::OkStatus();
  });
}

absl::StatusOr<WrappedKey> HsmClient::Wrap(WrappingKeyId id, const crypto::SecretBytes& dek) {
  if (dek.size() != kDekBytes) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a data key to wrap must be 32 bytes, got " + std::to_string(dek.size()));
  }
  WrappedKey out;
  out.mechanism = kMechanismAesKeyWrap;
  out.key = id;
  COFFER_RETURN_IF_ERROR(Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_FUNCTION_LIST* f = module_.functions();
    CK_OBJECT_HANDLE dwk = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      auto it = map_.dwks.find(id);
      if (it == map_.dwks.end()) {
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
    CK_RV rv = f->C_CreateObject(session, dek_template.data(), dek_template.size(), &dek_object);
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
    if (rv != CKR_OK) return CkError("C_WrapKey", rv, "wrapping a data key for " + id.ToString());
    wrapped.resize(wrapped_len);
    out.wrapped = std::move(wrapped);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<crypto::SecretBytes> HsmClient::Unwrap(const WrappedKey& blob) {
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
  COFFER_RETURN_IF_ERROR(Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_FUNCTION_LIST* f = module_.functions();
    CK_OBJECT_HANDLE dwk = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      auto it = map_.dwks.find(blob.key);
      if (it == map_.dwks.end()) {
        return MakeError(ErrorCode::kKeyDestroyed,
                         "the wrapping key for " + blob.key.ToString() +
                             " is not in the token: it was destroyed (or this is not the token "
                             "that wrapped the key), so this data key cannot be recovered");
      }
      dwk = it->second;
    }
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
        return CkErrorWithCode(ErrorCode::kWrappedKeyCorrupt, "C_UnwrapKey", rv,
                               blob.key.ToString(),
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
    dek = std::move(value);
    return absl::OkStatus();
  }));
  return dek;
}

absl::Status HsmClient::DestroyWrappingKey(WrappingKeyId id) {
  std::lock_guard<std::mutex> create_lock(create_mu_);
  return Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      auto it = map_.dwks.find(id);
      if (it == map_.dwks.end()) {
        return MakeError(ErrorCode::kHsmKeyNotFound,
                         "no wrapping key for " + id.ToString() + " in the token to destroy");
      }
      handle = it->second;
    }
    CK_RV rv = module_.functions()->C_DestroyObject(session, handle);
    // Already gone (destroyed outside coffer) is what was asked for.
    if (rv != CKR_OK && !IsHandleInvalid(rv)) {
      return CkError("C_DestroyObject", rv, "destroying the wrapping key for " + id.ToString());
    }
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    map_.dwks.erase(id);
    destroyed_.insert(id);
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<WrappingKeyId>> HsmClient::ListWrappingKeys() {
  {
    std::shared_lock<std::shared_mutex> lock(conn_mu_);
    if (closed_) return ClosedError();
  }
  std::shared_lock<std::shared_mutex> map_lock(map_mu_);
  std::vector<WrappingKeyId> ids;
  ids.reserve(map_.dwks.size());
  for (const auto& [id, handle] : map_.dwks) ids.push_back(id);
  return ids;
}

absl::StatusOr<WrappingKeyAttributes> HsmClient::InspectWrappingKey(WrappingKeyId id) {
  WrappingKeyAttributes out;
  COFFER_RETURN_IF_ERROR(Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_FUNCTION_LIST* f = module_.functions();
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      auto it = map_.dwks.find(id);
      if (it == map_.dwks.end()) {
        return MakeError(ErrorCode::kHsmKeyNotFound, "no wrapping key for " + id.ToString());
      }
      handle = it->second;
    }
    CK_BBOOL flags[11] = {};
    CK_ATTRIBUTE_TYPE types[11] = {CKA_TOKEN,
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
    CK_ATTRIBUTE attributes[11];
    for (size_t i = 0; i < 11; ++i) attributes[i] = {types[i], &flags[i], sizeof(CK_BBOOL)};
    CK_RV rv = f->C_GetAttributeValue(session, handle, attributes, 11);
    if (rv != CKR_OK) return CkError("C_GetAttributeValue", rv, "inspecting " + id.ToString());
    bool* fields[11] = {&out.token,
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
    for (size_t i = 0; i < 11; ++i) *fields[i] = flags[i] == CK_TRUE;

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
    out.value_read =
        rv == CKR_OK ? absl::OkStatus() : CkError("C_GetAttributeValue(CKA_VALUE)", rv);
    return absl::OkStatus();
  }));
  return out;
}

// ---- Service keys ----------------------------------------------------------------------------

// Lock order everywhere: create_mu_, then conn_mu_ (inside Run), then map_mu_.
absl::Status HsmClient::EnsureSigningKey() {
  {
    std::shared_lock<std::shared_mutex> map_lock(map_mu_);
    if (map_.signing_private && map_.signing_public) return absl::OkStatus();
  }
  std::lock_guard<std::mutex> create_lock(create_mu_);
  return Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (map_.signing_private && map_.signing_public) return absl::OkStatus();
    }
    CK_FUNCTION_LIST* f = module_.functions();
    ObjectId object{ObjectKind::kSigningKey};
    std::string label = internal::ObjectLabel(object);
    std::string id = internal::EncodeObjectId(object);
    AttributeList public_template;
    public_template.Ulong(CKA_CLASS, CKO_PUBLIC_KEY)
        .Ulong(CKA_KEY_TYPE, CKK_EC)
        .Bool(CKA_TOKEN, true)
        .Bool(CKA_PRIVATE, false)
        .Bool(CKA_VERIFY, true)
        .Bool(CKA_ENCRYPT, false)
        .Bool(CKA_WRAP, false)
        .Bytes(CKA_EC_PARAMS,
               std::string_view(reinterpret_cast<const char*>(kP256Params), sizeof(kP256Params)))
        .Bytes(CKA_LABEL, label)
        .Bytes(CKA_ID, id);
    AttributeList private_template;
    private_template.Ulong(CKA_CLASS, CKO_PRIVATE_KEY)
        .Ulong(CKA_KEY_TYPE, CKK_EC)
        .Bool(CKA_TOKEN, true)
        .Bool(CKA_PRIVATE, true)
        .Bool(CKA_SENSITIVE, true)
        .Bool(CKA_EXTRACTABLE, false)
        .Bool(CKA_SIGN, true)
        .Bool(CKA_DECRYPT, false)
        .Bool(CKA_UNWRAP, false)
        .Bool(CKA_DERIVE, false)
        .Bytes(CKA_LABEL, label)
        .Bytes(CKA_ID, id);
    CK_MECHANISM mechanism = {CKM_EC_KEY_PAIR_GEN, nullptr, 0};
    CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE;
    CK_OBJECT_HANDLE private_key = CK_INVALID_HANDLE;
    CK_RV rv = f->C_GenerateKeyPair(session, &mechanism, public_template.data(),
                                    public_template.size(), private_template.data(),
                                    private_template.size(), &public_key, &private_key);
    if (rv != CKR_OK) {
      return CkError("C_GenerateKeyPair", rv, "creating the audit signing key (ECDSA P-256)");
    }
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    map_.signing_public = public_key;
    map_.signing_private = private_key;
    return absl::OkStatus();
  });
}

absl::StatusOr<std::string> HsmClient::Sign(std::string_view message) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  if (EVP_Digest(message.data(), message.size(), digest, nullptr, EVP_sha256(), nullptr) != 1) {
    return MakeError(ErrorCode::kCryptoLibraryError, "SHA-256 failed");
  }
  COFFER_RETURN_IF_ERROR(EnsureSigningKey());
  std::string raw;
  COFFER_RETURN_IF_ERROR(Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (!map_.signing_private) return MakeError(ErrorCode::kHsmKeyNotFound, "no signing key");
      key = *map_.signing_private;
    }
    COFFER_ASSIGN_OR_RETURN(
        raw, SignRaw(session, CKM_ECDSA, key,
                     std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)), 64));
    return absl::OkStatus();
  }));
  return RawEcdsaToDer(raw);
}

absl::StatusOr<std::string> HsmClient::PublicKeyPem() {
  COFFER_RETURN_IF_ERROR(EnsureSigningKey());
  std::string ec_point;
  COFFER_RETURN_IF_ERROR(Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (!map_.signing_public) return MakeError(ErrorCode::kHsmKeyNotFound, "no public key");
      key = *map_.signing_public;
    }
    char point[128];
    CK_ATTRIBUTE attribute = {CKA_EC_POINT, point, sizeof(point)};
    CK_RV rv = module_.functions()->C_GetAttributeValue(session, key, &attribute, 1);
    if (rv != CKR_OK) {
      return CkError("C_GetAttributeValue(CKA_EC_POINT)", rv, "exporting the audit public key");
    }
    ec_point.assign(point, attribute.ulValueLen);
    return absl::OkStatus();
  }));
  return EcPointToPem(ec_point);
}

absl::Status HsmClient::EnsureRowHmacKey() {
  {
    std::shared_lock<std::shared_mutex> map_lock(map_mu_);
    if (map_.row_hmac) return absl::OkStatus();
  }
  std::lock_guard<std::mutex> create_lock(create_mu_);
  return Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (map_.row_hmac) return absl::OkStatus();
    }
    AttributeList attributes =
        TokenSecretKey(ObjectId{ObjectKind::kRowHmacKey}, CKK_GENERIC_SECRET);
    attributes.Ulong(CKA_VALUE_LEN, 32)
        .Bool(CKA_SIGN, true)
        .Bool(CKA_VERIFY, true)
        .Bool(CKA_WRAP, false)
        .Bool(CKA_UNWRAP, false)
        .Mechanisms(CKA_ALLOWED_MECHANISMS, {CKM_SHA256_HMAC});
    COFFER_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE handle,
                            GenerateSecretKey(session, CKM_GENERIC_SECRET_KEY_GEN, attributes));
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    map_.row_hmac = handle;
    return absl::OkStatus();
  });
}

absl::StatusOr<std::array<uint8_t, 32>> HsmClient::HmacRowKey(std::string_view data) {
  COFFER_RETURN_IF_ERROR(EnsureRowHmacKey());
  std::array<uint8_t, 32> out{};
  COFFER_RETURN_IF_ERROR(Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (!map_.row_hmac) return MakeError(ErrorCode::kHsmKeyNotFound, "no row HMAC key");
      key = *map_.row_hmac;
    }
    COFFER_ASSIGN_OR_RETURN(std::string mac, SignRaw(session, CKM_SHA256_HMAC, key, data, 32));
    if (mac.size() != out.size()) {
      return MakeError(ErrorCode::kHsmDeviceError, "the token returned a short HMAC-SHA256");
    }
    std::memcpy(out.data(), mac.data(), out.size());
    return absl::OkStatus();
  }));
  return out;
}

absl::Status HsmClient::ImportTotpSecret(uint64_t admin_id, const crypto::SecretBytes& secret) {
  if (secret.size() < 20 || secret.size() > 64) {
    return MakeError(ErrorCode::kInvalidArgument, "a TOTP secret must be 20 to 64 bytes");
  }
  std::lock_guard<std::mutex> create_lock(create_mu_);
  return Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (map_.totp.contains(admin_id)) {
        return MakeError(ErrorCode::kAlreadyExists, "admin " + std::to_string(admin_id) +
                                                        " already has a TOTP secret in the token");
      }
    }
    AttributeList attributes =
        TokenSecretKey(ObjectId{ObjectKind::kTotpSecret, admin_id}, CKK_GENERIC_SECRET);
    attributes.Bool(CKA_SIGN, true)
        .Bool(CKA_VERIFY, false)
        .Bool(CKA_WRAP, false)
        .Bool(CKA_UNWRAP, false)
        .Borrowed(CKA_VALUE, secret.data(), secret.size())
        .Mechanisms(CKA_ALLOWED_MECHANISMS, {CKM_SHA_1_HMAC});
    if (!allowed_mechanisms_supported_.load()) attributes.Remove(CKA_ALLOWED_MECHANISMS);
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
    CK_RV rv =
        module_.functions()->C_CreateObject(session, attributes.data(), attributes.size(), &handle);
    if (rv != CKR_OK) {
      return CkError("C_CreateObject", rv,
                     "storing the TOTP secret of admin " + std::to_string(admin_id));
    }
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    map_.totp[admin_id] = handle;
    return absl::OkStatus();
  });
}

absl::StatusOr<std::array<uint8_t, 20>> HsmClient::TotpHmac(uint64_t admin_id, uint64_t counter) {
  std::array<uint8_t, 20> out{};
  COFFER_RETURN_IF_ERROR(Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      auto it = map_.totp.find(admin_id);
      if (it == map_.totp.end()) {
        return MakeError(ErrorCode::kHsmKeyNotFound,
                         "admin " + std::to_string(admin_id) + " has no TOTP secret in the token");
      }
      key = it->second;
    }
    COFFER_ASSIGN_OR_RETURN(std::string mac,
                            SignRaw(session, CKM_SHA_1_HMAC, key, EncodeCounter(counter), 20));
    if (mac.size() != out.size()) {
      return MakeError(ErrorCode::kHsmDeviceError, "the token returned a short HMAC-SHA1");
    }
    std::memcpy(out.data(), mac.data(), out.size());
    return absl::OkStatus();
  }));
  return out;
}

absl::Status HsmClient::DestroyTotpSecret(uint64_t admin_id) {
  std::lock_guard<std::mutex> create_lock(create_mu_);
  return Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      auto it = map_.totp.find(admin_id);
      if (it == map_.totp.end()) {
        return MakeError(ErrorCode::kHsmKeyNotFound,
                         "admin " + std::to_string(admin_id) + " has no TOTP secret in the token");
      }
      handle = it->second;
    }
    CK_RV rv = module_.functions()->C_DestroyObject(session, handle);
    if (rv != CKR_OK && !IsHandleInvalid(rv)) {
      return CkError("C_DestroyObject", rv,
                     "destroying the TOTP secret of admin " + std::to_string(admin_id));
    }
    std::unique_lock<std::shared_mutex> map_lock(map_mu_);
    map_.totp.erase(admin_id);
    return absl::OkStatus();
  });
}

}  // namespace coffer::hsm
