// Module: one PKCS#11 library loaded into this process and initialised.
//
// Module::Load(path) dlopen()s the library, fetches its function table with C_GetFunctionList
// (present in PKCS#11 v2.x and 3.x modules alike) and calls C_Initialize with CKF_OS_LOCKING_OK,
// so the module may be called from many threads at once. Close() — and the destructor, if Close
// was not called — calls C_Finalize and dlclose()s the library. Call Close() explicitly before
// exit: a module finalised from a static destructor may already have torn down its own state.
//
// A PKCS#11 library is initialised once per process; a second Load of the same library while the
// first Module is open fails (CKR_CRYPTOKI_ALREADY_INITIALIZED → HSM_DEVICE_ERROR). SoftHSM2
// reads SOFTHSM2_CONF at C_Initialize, so set it before Load.
//
// Move-only: a copy could finalise the library while the original is still in use.
// Thread safety: functions() may be used from any thread; Load/Close/move are not concurrent.
// Errors: HSM_MODULE_NOT_FOUND (no file at path), HSM_NOT_PKCS11_MODULE (not a loadable library,
// no C_GetFunctionList, or a version below 2.x), HSM_DEVICE_ERROR (C_Initialize failed).

#ifndef COFFER_HSM_MODULE_H_
#define COFFER_HSM_MODULE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hsm/internal/pkcs11.h"

namespace coffer::hsm {

// Debian's SoftHSM2 package installs its module here.
inline constexpr std::string_view kDefaultModulePath = "/usr/lib/softhsm/libsofthsm2.so";

class Module {
 public:
  static absl::StatusOr<Module> Load(std::string_view path);

  Module(Module&& other) noexcept;
  Module& operator=(Module&& other) noexcept;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  ~Module();

  // C_Finalize, then dlclose. Idempotent; returns the C_Finalize error, if any (the library is
  // unloaded regardless).
  absl::Status Close();
  // C_Finalize, then C_Initialize again, keeping the library loaded: what a module that lost its
  // device needs when new sessions alone do not bring it back (a network HSM's client after a
  // network failure, a token pulled and put back). Every session and handle of the module is
  // gone afterwards. Not concurrent with any other call into the module (Token holds its
  // connection lock exclusively). Errors: FAILED_PRECONDITION after Close(), the C_Initialize
  // error (a C_Finalize error is ignored: the module is started afresh either way).
  absl::Status Reinitialize();

  bool is_open() const { return functions_ != nullptr; }
  // The module's function table; null after Close().
  CK_FUNCTION_LIST* functions() const { return functions_; }
  const std::string& path() const { return path_; }
  // "manufacturer / description vX.Y (Cryptoki vA.B)", from C_GetInfo.
  const std::string& description() const { return description_; }

 private:
  Module(void* library, CK_FUNCTION_LIST* functions, std::string path, std::string description)
      : library_(library),
        functions_(functions),
        path_(std::move(path)),
        description_(std::move(description)) {}

  void* library_ = nullptr;
  CK_FUNCTION_LIST* functions_ = nullptr;
  std::string path_;
  std::string description_;
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_MODULE_H_
