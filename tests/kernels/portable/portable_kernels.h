// The CPU kernels built a second time without AVX2 (the portable fallback)
// and with their namespace renamed, so a test binary can hold both builds
// and compare them bit for bit. Plain types only: this header means the
// same in either build.
#ifndef KVSESSION_TESTS_KERNELS_PORTABLE_PORTABLE_KERNELS_H_
#define KVSESSION_TESTS_KERNELS_PORTABLE_PORTABLE_KERNELS_H_

#include <cstddef>
#include <cstdint>

namespace kvs_portable {

// Whether the portable build compiled its AVX2 paths (it must not).
bool UsesAvx2();

// MatMul of the portable build; type is the GgmlType value.
void MatMul(uint32_t type, const void* data, int64_t rows, int64_t cols,
            size_t row_bytes, const float* x, int64_t n_tokens, float* out,
            int n_threads);

}  // namespace kvs_portable

#endif  // KVSESSION_TESTS_KERNELS_PORTABLE_PORTABLE_KERNELS_H_
