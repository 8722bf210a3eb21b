// Tensor element types of the GGUF/GGML format and their block geometry.
#ifndef KVSESSION_KERNELS_GGML_TYPE_H_
#define KVSESSION_KERNELS_GGML_TYPE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace kvsession::kernels {

// Values are the on-disk type ids of GGUF (ggml_type), so a tensor info's raw
// type casts to this enum once GetTypeTraits() accepted it.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

struct TypeTraits {
  GgmlType type;
  const char* name;
  int64_t block_elems;  // elements per quantization block (1 for float types)
  int64_t block_bytes;  // bytes per block
  bool weight_type;     // may appear as a model tensor (dequantizable)
};

// Null for a type id this build does not know.
const TypeTraits* GetTypeTraits(uint32_t raw_type);
const TypeTraits& Traits(GgmlType type);
const char* TypeName(GgmlType type);

// Bytes of `n_elems` elements of `type`. Fails if n_elems is not a multiple of
// the block size or the size overflows.
absl::StatusOr<uint64_t> TensorBytes(GgmlType type, int64_t n_elems);

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_GGML_TYPE_H_
