#include "kernels/ggml_type.h"

#include <limits>

#include "kernels/check.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvsession::kernels {
namespace {

constexpr TypeTraits kTraits[] = {
    {GgmlType::kF32, "F32", 1, 4, true},
    {GgmlType::kF16, "F16", 1, 2, true},
    {GgmlType::kBF16, "BF16", 1, 2, true},
    {GgmlType::kQ4_0, "Q4_0", 32, 18, true},
    {GgmlType::kQ4_1, "Q4_1", 32, 20, true},
    {GgmlType::kQ5_0, "Q5_0", 32, 22, true},
    {GgmlType::kQ5_1, "Q5_1", 32, 24, true},
    {GgmlType::kQ8_0, "Q8_0", 32, 34, true},
    {GgmlType::kQ8_1, "Q8_1", 32, 36, false},
    {GgmlType::kQ4_K, "Q4_K", 256, 144, true},
    {GgmlType::kQ5_K, "Q5_K", 256, 176, true},
    {GgmlType::kQ6_K, "Q6_K", 256, 210, true},
    {GgmlType::kQ8_K, "Q8_K", 256, 292, false},
};

}  // namespace

const TypeTraits* GetTypeTraits(uint32_t raw_type) {
  for (const TypeTraits& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == raw_type) return &t;
  }
  return nullptr;
}

const TypeTraits& Traits(GgmlType type) {
  const TypeTraits* t = GetTypeTraits(static_cast<uint32_t>(type));
  KVS_CHECK(t != nullptr) << "unknown ggml type " << static_cast<uint32_t>(type);
  return *t;
}

const char* TypeName(GgmlType type) { return Traits(type).name; }

absl::StatusOr<uint64_t> TensorBytes(GgmlType type, int64_t n_elems) {
  const TypeTraits* t = GetTypeTraits(static_cast<uint32_t>(type));
  if (t == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown tensor type ", static_cast<uint32_t>(type)));
  }
  if (n_elems < 0) {
    return absl::InvalidArgumentError("negative element count");
  }
  if (n_elems % t->block_elems != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(n_elems, " elements is not a multiple of the ", t->name,
                     " block size ", t->block_elems));
  }
  const uint64_t blocks = static_cast<uint64_t>(n_elems / t->block_elems);
  if (blocks > std::numeric_limits<uint64_t>::max() /
                   static_cast<uint64_t>(t->block_bytes)) {
    return absl::InvalidArgumentError("tensor size overflows");
  }
  return blocks * static_cast<uint64_t>(t->block_bytes);
}

}  // namespace kvsession::kernels
