// The one place hsm/ includes the PKCS#11 header.
//
// p11-kit ships the PKCS#11 v2.40 header with the standard CK_* names (its CRYPTOKI_COMPAT mode,
// the default). Modules implementing v3.x still export C_GetFunctionList with the v2.40 function
// table, which is all coffer uses, so one header serves both.

#ifndef COFFER_HSM_INTERNAL_PKCS11_H_
#define COFFER_HSM_INTERNAL_PKCS11_H_

#include <p11-kit/pkcs11.h>

#endif  // COFFER_HSM_INTERNAL_PKCS11_H_
