// Pieces matmul.cc and matmul_k.cc (the K-quant path) share: per-thread
// scratch buffers and the split of a MatMul's outputs between threads.
#ifndef KVSESSION_KERNELS_CPU_MATMUL_INTERNAL_H_
#define KVSESSION_KERNELS_CPU_MATMUL_INTERNAL_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "kernels/check.h"
#include "kernels/cpu/exec.h"
#include "kernels/cpu/ops.h"

namespace kvsession::kernels::matmul_internal {

inline constexpr int64_t kMinTokensPerThread = 16;  // below: split rows

// Grows on demand, never shrinks; one per thread so tasks never share.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(data_); }

  void* Get(size_t bytes) {
    if (bytes > capacity_) {
      std::free(data_);
      capacity_ = (bytes + 4095) & ~size_t{4095};
      data_ = std::aligned_alloc(64, capacity_);
      KVS_CHECK(data_ != nullptr) << "out of memory (" << capacity_ << ")";
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

inline size_t Align64(size_t n) { return (n + 63) & ~size_t{63}; }

// The block of outputs one thread owns: rows [r0, r1) x tokens [t0, t1).
struct Range {
  int64_t r0, r1, t0, t1;
};

// Thread k's outputs. Many tokens: split tokens, so each thread quantizes
// only its own. Few tokens: split row panels and let every thread quantize
// the (few) tokens privately. Either way threads never wait on each other
// inside the call, and no split touches a reduction.
inline Range ThreadRange(const WeightView& w, int64_t n_tokens,
                         int64_t panel_rows, int k, int n) {
  if (n_tokens >= kMinTokensPerThread * n) {
    return {0, w.rows, n_tokens * k / n, n_tokens * (k + 1) / n};
  }
  const int64_t panels = (w.rows + panel_rows - 1) / panel_rows;
  return {std::min(w.rows, panels * k / n * panel_rows),
          std::min(w.rows, panels * (k + 1) / n * panel_rows), 0, n_tokens};
}

// matmul_k.cc: Q4_K, Q5_K and Q6_K weights against Q8_K activations, for
// one thread's range. Row panels of kKPanelRows rows.
inline constexpr int64_t kKPanelRows = 6;
bool IsKQuant(GgmlType type);

// Which K-quant kernel runs a range. Every path computes the same exact
// integer sums per super-block and the same KStep sequence, so all give the
// same bits; MatMul uses kAuto. The others are for tests and benchmarks.
enum class KPath {
  kAuto,       // kFused up to kKFusedMaxTokens tokens, kPanel above
  kFused,      // weights decoded in registers, shared by up to 4 tokens
               // (more tokens: in groups of 4, each decoding the row again)
  kPanel,      // a panel unpacked to KUnpacked once, register tiles over it
  kUnpackOne,  // each super-block unpacked to a KUnpacked and used at once
               // (the decode path before the fused kernels)
};
// Measured (2048 x 2048, one thread): kFused beats kPanel up to 8 tokens,
// ties at 16; kPanel's unpack (~1 ms for the matrix) amortizes above.
inline constexpr int64_t kKFusedMaxTokens = 8;
void RunKQuant(const WeightView& w, const float* x, const Range& range,
               float* out, KPath path = KPath::kAuto);
// MatMul of K-quant weights through `path` (threads as MatMul's).
void MatMulKPath(const WeightView& w, const float* x, int64_t n_tokens,
                 float* out, const CpuExec& exec, KPath path);

// matmul.cc: MatMul through the dequantize + f32 dot path whatever the type
// (the path K-quants took before matmul_k.cc; kept for benchmarks).
void MatMulViaF32(const WeightView& w, const float* x, int64_t n_tokens,
                  float* out, const CpuExec& exec);

}  // namespace kvsession::kernels::matmul_internal

#endif  // KVSESSION_KERNELS_CPU_MATMUL_INTERNAL_H_
