// cofferd's replacement of the global operator delete: every block the C++ heap gives back is
// wiped first (docs/threat-model.md, "Secrets in memory").
//
// Why: a request's plaintext passes through buffers no one owns for long — the parsed protobuf
// request and response, the serialised reply frame, the decrypted value — and glibc's free()
// leaves a block's bytes in place until the block is reused, so a value read an hour ago could
// still be read out of the heap. Wiping at each such buffer would need every present and future
// handler to remember it; wiping in operator delete covers protobuf's strings, std::string and
// every container at once. Keys do not rely on this: they live in the secure heap (SecretBytes)
// or in OpenSSL contexts that OpenSSL wipes itself.
//
// Cost: one memset of the block's usable size per delete — of the order of the copies the
// request already made of the same bytes. Memory from malloc() proper (C libraries) is not
// covered; OpenSSL wipes what it allocated for keys.
//
// Linked into the daemon executables only (cofferd, test-cofferd), as an object file: a
// replacement operator in a static library would not be pulled in, since libstdc++ already
// defines the symbol.

#include <malloc.h>
#include <string.h>

#include <cstdlib>
#include <new>

// Sanitizers bring their own operator new and delete; a replacement would break their pairing.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COFFER_WIPING_DELETE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define COFFER_WIPING_DELETE 0
#endif
#endif
#ifndef COFFER_WIPING_DELETE
#define COFFER_WIPING_DELETE 1
#endif

#if defined(__SANITIZE_ADDRESS__)
#define COFFER_ASAN_WIPES 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COFFER_ASAN_WIPES 1
#endif
#endif

#ifdef COFFER_ASAN_WIPES
// Under AddressSanitizer the daemon keeps ASan's operator delete and has ASan wipe instead: every
// freed block is filled with free_fill_byte (0x55) before it enters the quarantine, where it
// would otherwise keep its bytes. Wider than the replacement — free() of C libraries too — so
// only the normal build shows what those leave. ASAN_OPTIONS can still set another size.
extern "C" __attribute__((visibility("default"), no_sanitize_address)) const char*
__asan_default_options() {
  return "max_free_fill_size=2147483647";
}
#endif

#if COFFER_WIPING_DELETE

namespace {

void WipeAndFree(void* block) noexcept {
  if (block == nullptr) return;
  explicit_bzero(block, malloc_usable_size(block));  // a store the compiler may not drop
  std::free(block);
}

}  // namespace

// libstdc++'s operator new (plain and aligned) allocates with malloc / aligned_alloc, so every
// block handed here is one free() accepts and malloc_usable_size() measures.
void operator delete(void* block) noexcept { WipeAndFree(block); }
void operator delete[](void* block) noexcept { WipeAndFree(block); }
void operator delete(void* block, std::size_t) noexcept { WipeAndFree(block); }
void operator delete[](void* block, std::size_t) noexcept { WipeAndFree(block); }
void operator delete(void* block, const std::nothrow_t&) noexcept { WipeAndFree(block); }
void operator delete[](void* block, const std::nothrow_t&) noexcept { WipeAndFree(block); }
void operator delete(void* block, std::align_val_t) noexcept { WipeAndFree(block); }
void operator delete[](void* block, std::align_val_t) noexcept { WipeAndFree(block); }
void operator delete(void* block, std::size_t, std::align_val_t) noexcept { WipeAndFree(block); }
void operator delete[](void* block, std::size_t, std::align_val_t) noexcept { WipeAndFree(block); }
void operator delete(void* block, std::align_val_t, const std::nothrow_t&) noexcept {
  WipeAndFree(block);
}
void operator delete[](void* block, std::align_val_t, const std::nothrow_t&) noexcept {
  WipeAndFree(block);
}

#endif  // COFFER_WIPING_DELETE
