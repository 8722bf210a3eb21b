// The one interface the model computes through. A backend owns its memory
// (host memory on the CPU, device memory on CUDA); pointers handed to its ops
// point into buffers it allocated. Ops are enqueued in order; Synchronize()
// waits for them (a no-op on the CPU).
#ifndef KVSESSION_KERNELS_BACKEND_H_
#define KVSESSION_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/cpu/ops.h"
#include "kernels/kv_cache_view.h"

namespace kvsession::kernels {

class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual void* data() = 0;
  virtual size_t size() const = 0;
  template <typename T>
  T* as() {
    return static_cast<T*>(data());
  }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  virtual absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) = 0;
  // Makes a host weight usable by the ops (the CPU uses the mapping as is).
  virtual absl::StatusOr<WeightView> PrepareWeight(const WeightView& host) = 0;
  virtual void CopyToHost(const void* src, void* dst, size_t bytes) = 0;
  virtual void CopyFromHost(const void* src, void* dst, size_t bytes) = 0;
  virtual void Synchronize() = 0;

  // The ops of kernels/cpu/ops.h, same meaning.
  virtual void Embed(const WeightView& table, const int32_t* tokens,
                     int64_t n_tokens, float* out) = 0;
  virtual void RmsNorm(const float* x, const float* weight, int64_t n_rows,
                       int64_t dim, float eps, float* out) = 0;
  virtual void MatMul(const WeightView& w, const float* x, int64_t n_tokens,
                      float* out) = 0;
  virtual void Rope(float* x, int64_t n_tokens, int32_t n_heads,
                    const int32_t* positions, const RopeParams& params) = 0;
  virtual void KvWrite(const KvCacheView& kv, int32_t layer,
                       const TokenPlacement& placement, const float* k,
                       const float* v) = 0;
  virtual void Attention(const KvCacheView& kv, int32_t layer,
                         const TokenPlacement& placement, const float* q,
                         const AttentionParams& params, float* out) = 0;
  virtual void SwiGlu(const float* gate, const float* up, int64_t n,
                      float* out) = 0;
  virtual void Add(const float* a, const float* b, int64_t n, float* out) = 0;
  // dst[i] = src[rows[i]] for rows of `dim` floats; `rows` is host memory.
  virtual void GatherRows(const float* src, const int32_t* rows,
                          int64_t n_rows, int64_t dim, float* dst) = 0;
};

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_BACKEND_H_
