// A fault-injecting PKCS#11 module for tests (issue 19 item 3): it forwards every call to a real
// module (SoftHSM2) and fails or delays the calls its rules name, so that a running cofferd can be
// shown what a failing HSM does to it. Never installed; built only for the test suites.
//
// Configuration, read by the module itself (cofferd only sees a PKCS#11 module path):
//  - the real module: $COFFER_PKCS11_FAULT_TARGET, default Debian's SoftHSM2
//    (/usr/lib/softhsm/libsofthsm2.so);
//  - the rules: $COFFER_PKCS11_FAULTS, default the file `faults` beside $SOFTHSM2_CONF (cofferd
//    sets SOFTHSM2_CONF to its token directory's softhsm2.conf before loading the module, so a
//    test writes <token directory>/faults). Read again on every call: a test changes the faults
//    of a running daemon by rewriting the file (write a temporary file and rename it over).
//
// One rule per line ('#' starts a comment):
//    FUNCTION CKR_NAME [COUNT]   calls of FUNCTION ("*": any call) fail with CKR_NAME — every
//                                call, or only the next COUNT (counted per rule text, so keep the
//                                line as it is while its count runs down)
//    FUNCTION CKR_NAME until_reinit  calls fail until the module is finalised and initialised
//                                again (a device that only a restart of the module brings back;
//                                C_Finalize and C_Initialize themselves are never failed by it)
//    FUNCTION delay MILLISECONDS  calls of FUNCTION wait that long, then run
// Counts and "until_reinit" are kept per process: a restarted daemon starts them afresh.
// The log, `faults.log` beside the rules (append-only): one line per injected fault
// ("fault C_UnwrapKey CKR_DEVICE_ERROR") and one per forwarded C_Initialize and C_Finalize
// ("call C_Initialize"), so a test can count faults and see a module re-initialised.
//
// Thread safety: calls may come from many threads; the rule counters and the log are under one
// mutex. The forwarded module is called concurrently, as the caller would have called it.

#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr char kDefaultTarget[] = "/usr/lib/softhsm/libsofthsm2.so";

CK_FUNCTION_LIST* g_target = nullptr;  // the real module's table
CK_FUNCTION_LIST g_list;               // ours: the target's, with every entry wrapped
std::mutex g_mu;
std::map<std::string, long> g_used;  // rule text → calls it has failed
// Forwarded C_Initialize calls that succeeded, and for each "until_reinit" rule the count when it
// first failed a call.
long g_initializations = 0;
std::map<std::string, long> g_armed_at;

// The return values a rule may name. A constant table, not a heap-allocated map: cofferd
// dlcloses this module at C_Finalize, and a block whose only pointer lived in the module's own
// globals would then be a leak (LeakSanitizer reported exactly such a never-freed map, its 14
// nodes and 12 long names, in every daemon of kms_daemon_hsm_faults_test).
struct ReturnValue {
  const char* name;
  CK_RV rv;
};
constexpr ReturnValue kReturnValues[] = {
    {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"CKR_TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED},
    {"CKR_PIN_INCORRECT", CKR_PIN_INCORRECT},
    {"CKR_PIN_EXPIRED", CKR_PIN_EXPIRED},
    {"CKR_PIN_LOCKED", CKR_PIN_LOCKED},
    {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"CKR_CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED},
};

// The value a rule's CKR_NAME stands for, or nothing for a name not in the table.
const ReturnValue* FindReturnValue(const std::string& name) {
  for (const ReturnValue& value : kReturnValues) {
    if (name == value.name) return &value;
  }
  return nullptr;
}

std::string RulesPath() {
  if (const char* path = std::getenv("COFFER_PKCS11_FAULTS"); path != nullptr && *path != '\0') {
    return path;
  }
  const char* conf = std::getenv("SOFTHSM2_CONF");
  if (conf == nullptr || *conf == '\0') return "";
  std::string dir(conf);
  const size_t slash = dir.rfind('/');
  return (slash == std::string::npos ? std::string(".") : dir.substr(0, slash)) + "/faults";
}

void Log(const std::string& line) {
  const std::string rules = RulesPath();
  if (rules.empty()) return;
  const size_t slash = rules.rfind('/');
  const std::string log =
      (slash == std::string::npos ? std::string(".") : rules.substr(0, slash)) + "/faults.log";
  std::ofstream out(log, std::ios::app);
  out << line << '\n';
}

// What the rules say about a call of `function`: a return value to fail it with (true), after
// any delay they name.
bool Inject(const char* function, CK_RV* rv) {
  const std::string path = RulesPath();
  if (path.empty()) return false;
  std::ifstream in(path);
  if (!in) return false;
  long delay_ms = 0;
  bool fail = false;
  std::lock_guard<std::mutex> lock(g_mu);
  for (std::string line; std::getline(in, line);) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string name, what;
    if (!(words >> name >> what)) continue;
    if (name != "*" && name != function) continue;
    // The third word: a count (or delay), or a modifier.
    long number = -1;
    std::string modifier;
    if (words >> modifier && !modifier.empty() &&
        modifier.find_first_not_of("0123456789") == std::string::npos) {
      number = std::stol(modifier);
      modifier.clear();
    }
    if (what == "delay") {
      if (number > 0) delay_ms += number;
      continue;
    }
    const ReturnValue* code = FindReturnValue(what);
    if (code == nullptr || fail) continue;
    if (modifier == "until_reinit") {
      if (std::strcmp(function, "C_Initialize") == 0 || std::strcmp(function, "C_Finalize") == 0) {
        continue;
      }
      auto armed = g_armed_at.emplace(line, g_initializations).first;
      if (g_initializations > armed->second) continue;  // re-initialised since: the device is back
    }
    long& used = g_used[line];
    if (number >= 0 && used >= number) continue;  // its count has run down
    ++used;
    fail = true;
    *rv = code->rv;
    Log("fault " + std::string(function) + " " + what);
  }
  if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  return fail;
}

// One wrapper per entry of CK_FUNCTION_LIST, generated from the entry's own type.
template <typename Entry>
struct Wrap;

template <typename... Args>
struct Wrap<CK_RV (*)(Args...)> {
  template <CK_RV (*CK_FUNCTION_LIST::*Member)(Args...), const char* Name>
  static CK_RV Call(Args... args) {
    CK_RV rv = CKR_OK;
    if (Inject(Name, &rv)) return rv;
    const bool lifecycle =
        std::strcmp(Name, "C_Initialize") == 0 || std::strcmp(Name, "C_Finalize") == 0;
    const CK_RV forwarded = (g_target->*Member)(args...);
    if (lifecycle) {
      std::lock_guard<std::mutex> lock(g_mu);
      if (std::strcmp(Name, "C_Initialize") == 0 && forwarded == CKR_OK) ++g_initializations;
      Log(std::string("call ") + Name);
    }
    return forwarded;
  }
};

// Every entry of the v2.40 CK_FUNCTION_LIST.
// clang-format off
#define COFFER_FAULT_FUNCTIONS(X) \
  X(C_Initialize) X(C_Finalize) X(C_GetInfo) X(C_GetSlotList) \
  X(C_GetSlotInfo) X(C_GetTokenInfo) X(C_GetMechanismList) X(C_GetMechanismInfo) \
  X(C_InitToken) X(C_InitPIN) X(C_SetPIN) X(C_OpenSession) \
  X(C_CloseSession) X(C_CloseAllSessions) X(C_GetSessionInfo) X(C_GetOperationState) \
  X(C_SetOperationState) X(C_Login) X(C_Logout) X(C_CreateObject) \
  X(C_CopyObject) X(C_DestroyObject) X(C_GetObjectSize) X(C_GetAttributeValue) \
  X(C_SetAttributeValue) X(C_FindObjectsInit) X(C_FindObjects) X(C_FindObjectsFinal) \
  X(C_EncryptInit) X(C_Encrypt) X(C_EncryptUpdate) X(C_EncryptFinal) \
  X(C_DecryptInit) X(C_Decrypt) X(C_DecryptUpdate) X(C_DecryptFinal) \
  X(C_DigestInit) X(C_Digest) X(C_DigestUpdate) X(C_DigestKey) \
  X(C_DigestFinal) X(C_SignInit) X(C_Sign) X(C_SignUpdate) \
  X(C_SignFinal) X(C_SignRecoverInit) X(C_SignRecover) X(C_VerifyInit) \
  X(C_Verify) X(C_VerifyUpdate) X(C_VerifyFinal) X(C_VerifyRecoverInit) \
  X(C_VerifyRecover) X(C_DigestEncryptUpdate) X(C_DecryptDigestUpdate) X(C_SignEncryptUpdate) \
  X(C_DecryptVerifyUpdate) X(C_GenerateKey) X(C_GenerateKeyPair) X(C_WrapKey) \
  X(C_UnwrapKey) X(C_DeriveKey) X(C_SeedRandom) X(C_GenerateRandom) \
  X(C_GetFunctionStatus) X(C_CancelFunction) X(C_WaitForSlotEvent)
// clang-format on

#define COFFER_FAULT_NAME(function) constexpr char k##function[] = #function;
COFFER_FAULT_FUNCTIONS(COFFER_FAULT_NAME)
#undef COFFER_FAULT_NAME

bool LoadTarget() {
  if (g_target != nullptr) return true;
  const char* path = std::getenv("COFFER_PKCS11_FAULT_TARGET");
  void* library =
      dlopen(path != nullptr && *path != '\0' ? path : kDefaultTarget, RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) return false;
  auto get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(library, "C_GetFunctionList"));
  CK_FUNCTION_LIST* target = nullptr;
  if (get == nullptr || get(&target) != CKR_OK || target == nullptr) return false;
  g_target = target;
  g_list = *target;
#define COFFER_FAULT_WRAP(function)                                                                \
  if (g_list.function != nullptr) {                                                                \
    g_list.function =                                                                              \
        &Wrap<decltype(g_list.function)>::template Call<&CK_FUNCTION_LIST::function, k##function>; \
  }
  COFFER_FAULT_FUNCTIONS(COFFER_FAULT_WRAP)
#undef COFFER_FAULT_WRAP
  return true;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) CK_RV C_GetFunctionList(
    CK_FUNCTION_LIST_PTR_PTR list) {
  if (list == nullptr) return CKR_ARGUMENTS_BAD;
  std::lock_guard<std::mutex> lock(g_mu);
  if (!LoadTarget()) return CKR_GENERAL_ERROR;
  *list = &g_list;
  return CKR_OK;
}
