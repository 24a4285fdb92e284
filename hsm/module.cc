#include "hsm/module.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cstring>
#include <utility>

#include "crypto/base/status.h"
#include "hsm/internal/ck_error.h"

namespace coffer::hsm {
namespace {

// PKCS#11 fixed-width, blank-padded text fields.
std::string Trimmed(const unsigned char* field, size_t size) {
  std::string text(reinterpret_cast<const char*>(field), size);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\0')) text.pop_back();
  return text;
}

}  // namespace

absl::StatusOr<Module> Module::Load(std::string_view path_view) {
  std::string path(path_view);
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) {
    return MakeError(ErrorCode::kHsmModuleNotFound,
                     "PKCS#11 module not found at '" + path +
                         "'; install it (Debian: apt-get install softhsm2) or set the module path");
  }
  if (!S_ISREG(st.st_mode)) {
    return MakeError(ErrorCode::kHsmNotPkcs11Module,
                     "'" + path + "' is not a regular file; give the path of a PKCS#11 library");
  }
  void* library = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* why = ::dlerror();
    return MakeError(ErrorCode::kHsmNotPkcs11Module,
                     "'" + path + "' is not a loadable PKCS#11 library (" +
                         (why != nullptr ? why : "dlopen failed") + ")");
  }
  auto get_function_list =
      reinterpret_cast<CK_C_GetFunctionList>(::dlsym(library, "C_GetFunctionList"));
  if (get_function_list == nullptr) {
    ::dlclose(library);
    return MakeError(ErrorCode::kHsmNotPkcs11Module,
                     "'" + path +
                         "' does not export C_GetFunctionList, so it is not a PKCS#11 module; "
                         "check the module path");
  }
  CK_FUNCTION_LIST* functions = nullptr;
  CK_RV rv = get_function_list(&functions);
  if (rv != CKR_OK || functions == nullptr || functions->version.major < 2) {
    ::dlclose(library);
    return MakeError(ErrorCode::kHsmNotPkcs11Module,
                     "'" + path + "' returned no usable PKCS#11 v2.x/3.x function list (" +
                         internal::CkrName(rv) + ")");
  }
  CK_C_INITIALIZE_ARGS args;
  std::memset(&args, 0, sizeof(args));
  args.flags = CKF_OS_LOCKING_OK;
  rv = functions->C_Initialize(&args);
  if (rv != CKR_OK) {
    ::dlclose(library);
    std::string context = "initialising '" + path + "'";
    if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      context += "; it is already initialised in this process, share the open Module";
    }
    return internal::CkError("C_Initialize", rv, context);
  }
  std::string description;
  CK_INFO info;
  if (functions->C_GetInfo(&info) == CKR_OK) {
    description = Trimmed(info.manufacturerID, sizeof(info.manufacturerID)) + " / " +
                  Trimmed(info.libraryDescription, sizeof(info.libraryDescription)) + " v" +
                  std::to_string(info.libraryVersion.major) + "." +
                  std::to_string(info.libraryVersion.minor) + " (Cryptoki v" +
                  std::to_string(info.cryptokiVersion.major) + "." +
                  std::to_string(info.cryptokiVersion.minor) + ")";
  }
  return Module(library, functions, std::move(path), std::move(description));
}

Module::Module(Module&& other) noexcept
    : library_(std::exchange(other.library_, nullptr)),
      functions_(std::exchange(other.functions_, nullptr)),
      path_(std::move(other.path_)),
      description_(std::move(other.description_)) {}

Module& Module::operator=(Module&& other) noexcept {
  if (this != &other) {
    (void)Close();
    library_ = std::exchange(other.library_, nullptr);
    functions_ = std::exchange(other.functions_, nullptr);
    path_ = std::move(other.path_);
    description_ = std::move(other.description_);
  }
  return *this;
}

Module::~Module() { (void)Close(); }

absl::Status Module::Reinitialize() {
  if (functions_ == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "the PKCS#11 module is closed");
  }
  (void)functions_->C_Finalize(nullptr);
  CK_C_INITIALIZE_ARGS args;
  std::memset(&args, 0, sizeof(args));
  args.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = functions_->C_Initialize(&args);
  // Already initialised: its C_Finalize failed and it kept running; new sessions follow.
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    return internal::CkError("C_Initialize", rv, "re-initialising '" + path_ + "'");
  }
  return absl::OkStatus();
}

absl::Status Module::Close() {
  absl::Status status;
  if (functions_ != nullptr) {
    CK_RV rv = functions_->C_Finalize(nullptr);
    if (rv != CKR_OK) status = internal::CkError("C_Finalize", rv, "closing '" + path_ + "'");
    functions_ = nullptr;
  }
  if (library_ != nullptr) {
    ::dlclose(library_);
    library_ = nullptr;
  }
  return status;
}

}  // namespace coffer::hsm
