/* A test-only PKCS#11 "module" whose C_Initialize installs an ENGINE as OpenSSL's default RAND
 * method, the way SoftHSM2's source installs its RDRAND engine. The engine returns 0x42 bytes, so
 * a test can see whether a caller's randomness followed the replacement. Only C_Initialize,
 * C_Finalize and C_GetFunctionList are provided; nothing else is needed to load it. */
#include <openssl/engine.h>
#include <openssl/rand.h>
#include <p11-kit/pkcs11.h>
#include <string.h>

static int ConstantBytes(unsigned char* out, int n) {
  memset(out, 0x42, (size_t)n);
  return 1;
}
static int ConstantStatus(void) { return 1; }

static RAND_METHOD constant_method = {
    NULL, ConstantBytes, NULL, NULL, ConstantBytes, ConstantStatus,
};
static ENGINE* engine;

static CK_RV Initialize(void* args) {
  (void)args;
  engine = ENGINE_new();
  if (engine == NULL || !ENGINE_set_id(engine, "coffer-test-constant-rand") ||
      !ENGINE_set_name(engine, "constant RAND for tests") ||
      !ENGINE_set_RAND(engine, &constant_method) || !ENGINE_init(engine) ||
      !ENGINE_set_default_RAND(engine)) {
    return CKR_GENERAL_ERROR;
  }
  return CKR_OK;
}

static CK_RV Finalize(void* reserved) {
  (void)reserved;
  if (engine != NULL) {
    ENGINE_unregister_RAND(engine);
    RAND_set_rand_method(NULL);
    ENGINE_finish(engine);
    ENGINE_free(engine);
    engine = NULL;
  }
  return CKR_OK;
}

static CK_FUNCTION_LIST functions;

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  functions.version.major = 2;
  functions.version.minor = 40;
  functions.C_Initialize = Initialize;
  functions.C_Finalize = Finalize;
  *list = &functions;
  return CKR_OK;
}
