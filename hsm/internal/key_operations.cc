#include "hsm/internal/key_operations.h"

#include "hsm/internal/ck_error.h"

namespace coffer::hsm::internal {

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
      .Bytes(CKA_LABEL, ObjectLabel(id))
      .Bytes(CKA_ID, EncodeObjectId(id));
  return attributes;
}

absl::StatusOr<CK_OBJECT_HANDLE> GenerateSecretKey(Token& token, CK_SESSION_HANDLE session,
                                                   CK_MECHANISM_TYPE mechanism,
                                                   AttributeList& attributes) {
  CK_FUNCTION_LIST* f = token.functions();
  CK_MECHANISM mech = {mechanism, nullptr, 0};
  if (!token.allowed_mechanisms_supported()) attributes.Remove(CKA_ALLOWED_MECHANISMS);
  CK_OBJECT_HANDLE handle = CK_INVALID_HANDLE;
  CK_RV rv = f->C_GenerateKey(session, &mech, attributes.data(), attributes.size(), &handle);
  if (rv == CKR_ATTRIBUTE_TYPE_INVALID && token.allowed_mechanisms_supported()) {
    // A token without CKA_ALLOWED_MECHANISMS: the key's CKA_WRAP/CKA_SIGN flags still bound it.
    token.NoteAllowedMechanismsUnsupported();
    attributes.Remove(CKA_ALLOWED_MECHANISMS);
    rv = f->C_GenerateKey(session, &mech, attributes.data(), attributes.size(), &handle);
  }
  if (rv != CKR_OK) return CkError("C_GenerateKey", rv, "creating a key in the token");
  return handle;
}

absl::StatusOr<std::string> SignWithKey(CK_FUNCTION_LIST* functions, CK_SESSION_HANDLE session,
                                        CK_MECHANISM_TYPE mechanism, CK_OBJECT_HANDLE key,
                                        std::string_view data, size_t max_out) {
  CK_MECHANISM mech = {mechanism, nullptr, 0};
  CK_RV rv = functions->C_SignInit(session, &mech, key);
  if (rv != CKR_OK) return CkError("C_SignInit", rv, "signing with a token key");
  std::string out(max_out, '\0');
  auto out_len = static_cast<CK_ULONG>(out.size());
  rv = functions->C_Sign(session, reinterpret_cast<CK_BYTE*>(const_cast<char*>(data.data())),
                         static_cast<CK_ULONG>(data.size()), reinterpret_cast<CK_BYTE*>(out.data()),
                         &out_len);
  if (rv != CKR_OK) return CkError("C_Sign", rv, "signing with a token key");
  out.resize(out_len);
  return out;
}

}  // namespace coffer::hsm::internal
