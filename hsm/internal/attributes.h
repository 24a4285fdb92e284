// AttributeList: builds a CK_ATTRIBUTE template whose values outlive the PKCS#11 call.
//
// Bool/Ulong/Bytes/Mechanisms copy their value into the list. Borrowed() stores only a pointer:
// use it for key material already in the secure heap, so that no copy lands in ordinary memory;
// the caller keeps the buffer alive until the call returns. Not thread-safe; one per call.

#ifndef COFFER_HSM_INTERNAL_ATTRIBUTES_H_
#define COFFER_HSM_INTERNAL_ATTRIBUTES_H_

#include <cstddef>
#include <deque>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "hsm/internal/pkcs11.h"

namespace coffer::hsm::internal {

class AttributeList {
 public:
  AttributeList& Bool(CK_ATTRIBUTE_TYPE type, bool value) {
    CK_BBOOL b = value ? CK_TRUE : CK_FALSE;
    return Copy(type, &b, sizeof(b));
  }
  AttributeList& Ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value) {
    return Copy(type, &value, sizeof(value));
  }
  AttributeList& Bytes(CK_ATTRIBUTE_TYPE type, std::string_view value) {
    return Copy(type, value.data(), value.size());
  }
  AttributeList& Mechanisms(CK_ATTRIBUTE_TYPE type,
                            std::initializer_list<CK_MECHANISM_TYPE> mechanisms) {
    std::vector<CK_MECHANISM_TYPE> list(mechanisms);
    return Copy(type, list.data(), list.size() * sizeof(CK_MECHANISM_TYPE));
  }
  AttributeList& Borrowed(CK_ATTRIBUTE_TYPE type, const void* value, size_t size) {
    attributes_.push_back({type, const_cast<void*>(value), static_cast<CK_ULONG>(size)});
    return *this;
  }
  // Drops every attribute of `type` (e.g. CKA_ALLOWED_MECHANISMS for tokens without it).
  void Remove(CK_ATTRIBUTE_TYPE type) {
    std::erase_if(attributes_, [type](const CK_ATTRIBUTE& a) { return a.type == type; });
  }

  CK_ATTRIBUTE* data() { return attributes_.data(); }
  CK_ULONG size() const { return static_cast<CK_ULONG>(attributes_.size()); }

 private:
  AttributeList& Copy(CK_ATTRIBUTE_TYPE type, const void* value, size_t size) {
    std::string& stored = storage_.emplace_back(static_cast<const char*>(value), size);
    attributes_.push_back({type, stored.data(), static_cast<CK_ULONG>(size)});
    return *this;
  }

  std::deque<std::string> storage_;  // deque: stable addresses as it grows
  std::vector<CK_ATTRIBUTE> attributes_;
};

}  // namespace coffer::hsm::internal

#endif  // COFFER_HSM_INTERNAL_ATTRIBUTES_H_
