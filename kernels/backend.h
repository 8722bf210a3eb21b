// The one interface the model computes through. A backend owns its memory
// (host memory on the CPU, device memory on CUDA); pointers handed to its ops
// point into buffers it allocated. Ops are enqueued in order; Synchronize()
// waits for them (a no-op on the CPU).
//
// The ops are primitives; a model family describes its layer as a sequence
// of them (runtime/arch/). That sequence is the contract: a backend may run
// a known run of ops as one fused launch, privately, only where the result
// is bitwise the same as the ops one by one.
#ifndef KVSESSION_KERNELS_BACKEND_H_
#define KVSESSION_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "kernels/kv_cache_view.h"
#include "kernels/op_params.h"

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

// One block copy between two arenas, in block ids.
struct BlockMove {
  int32_t src = 0;
  int32_t dst = 0;
};

// The host arrays of one model step.
struct StepInputs {
  const int32_t* tokens = nullptr;
  TokenPlacement placement;  // n_tokens entries, host memory
  int32_t block_size = 16;
  const int32_t* logit_rows = nullptr;
  int32_t n_logit_rows = 0;
  const void* kv_base = nullptr;  // the step's KV arena
};

// The same arrays where the backend's ops read them (its own memory: a
// device copy on a GPU backend). Ops that take token ids, positions, block
// tables or rows get these.
struct StepViews {
  const int32_t* tokens = nullptr;
  TokenPlacement placement;
  const int32_t* logit_rows = nullptr;
  int32_t n_logit_rows = 0;
};

struct MemoryInfo {
  int64_t free_bytes = 0;  // 0, 0: the backend computes in host memory
  int64_t total_bytes = 0;
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
  virtual MemoryInfo GetMemoryInfo() const { return {}; }

  // Host memory for the host KV tier: page-locked on a GPU backend so that
  // swaps run at the bus's full speed.
  virtual absl::StatusOr<std::unique_ptr<Buffer>> AllocateHost(
      size_t bytes) = 0;
  // Copies whole KV blocks from one arena to another (each backend memory
  // or AllocateHost memory) and returns once they have landed. Runs on the
  // copy thread, concurrently with the ops of other blocks (a GPU backend
  // uses a copy stream of its own).
  virtual void CopyBlocks(const void* src_base, void* dst_base,
                          size_t block_bytes,
                          std::span<const BlockMove> moves) = 0;

  // PrepareWeight for weights that share their input (Q, K and V; gate and
  // up): a backend may store them back to back and run consecutive MatMuls
  // of the group as one GEMM.
  virtual absl::StatusOr<std::vector<WeightView>> PrepareWeights(
      std::span<const WeightView> host) {
    std::vector<WeightView> out;
    for (const WeightView& w : host) {
      absl::StatusOr<WeightView> p = PrepareWeight(w);
      if (!p.ok()) return p.status();
      out.push_back(*p);
    }
    return out;
  }
  // RegisterWeight for such a group already in backend memory, in order.
  virtual absl::Status RegisterWeights(std::span<const WeightView> ws) {
    for (const WeightView& w : ws) {
      if (absl::Status s = RegisterWeight(w); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  // Whether the ops can address KV blocks of `block_size` tokens
  // (INVALID_ARGUMENT if not); the engine asks before it makes its arenas.
  virtual absl::Status CheckBlockSize(int32_t block_size) const {
    (void)block_size;
    return absl::OkStatus();
  }

  // Makes a weight already in backend memory (FillRandom) usable by MatMul,
  // like PrepareWeight does for host weights.
  virtual absl::Status RegisterWeight(const WeightView& w) {
    (void)w;
    return absl::OkStatus();
  }

  // Runs one model step: makes the step's inputs visible to the ops and
  // calls `ops(views)`, which issues the step's ops (on buffers from
  // Allocate and arrays of `views` only). A backend may record the ops and,
  // for a later step of the same shape and buffers, replay the recording
  // instead of calling `ops`: so `ops` does nothing but issue ops. Ops that
  // read int arrays (Embed, Rope, KvWrite, Attention, GatherRows) run only
  // inside RunStep. The default runs `ops` on the host arrays.
  virtual void RunStep(const StepInputs& step,
                       absl::FunctionRef<void(const StepViews&)> ops) {
    StepViews v;
    v.tokens = step.tokens;
    v.placement = step.placement;
    v.logit_rows = step.logit_rows;
    v.n_logit_rows = step.n_logit_rows;
    ops(v);
  }
  // dst (backend memory) = FillRandom values (kernels/cpu/ops.h).
  virtual void FillRandom(GgmlType type, void* dst, int64_t n, uint64_t seed,
                          float scale) = 0;
  // Whether SampleTokens runs where the logits are (so that only token ids
  // cross the bus); the engine then samples greedy and top-k rows there.
  virtual bool samples_on_device() const { return false; }
  // out[r] (host) = the token SampleTokens picks for logits row r (backend
  // memory); rows is host memory.
  virtual void SampleTokens(const float* logits, int32_t n_rows,
                            int32_t vocab, const SampleRow* rows,
                            int32_t* out) = 0;

  // The primitive ops. Each means what its CPU reference in kernels/cpu/ops.h
  // means; int arrays come from the step's StepViews.
  virtual void Embed(const WeightView& table, const int32_t* tokens,
                     int64_t n_tokens, float* out) = 0;
  // Rows of `dim` floats: a per-head norm is n_tokens * n_heads rows of
  // head_dim. out may alias x.
  virtual void RmsNorm(const float* x, const float* weight, int64_t n_rows,
                       int64_t dim, float eps, float* out) = 0;
  // out holds n_tokens rounded up to RowPadding() rows; rows past n_tokens
  // receive unspecified values (a GPU GEMM writes whole tiles).
  virtual void MatMul(const WeightView& w, const float* x, int64_t n_tokens,
                      float* out) = 0;
  // out[r] = x[r] + bias (a projection's bias; out may alias x).
  virtual void AddBias(const float* x, const float* bias, int64_t n_rows,
                       int64_t dim, float* out) = 0;
  // Rows that activation buffers are rounded up to (see MatMul).
  virtual int64_t RowPadding() const { return 1; }
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
  virtual void GeGlu(const float* gate, const float* up, int64_t n,
                     float* out) = 0;
  // out = x * s (Gemma's embedding scale; out may alias x).
  virtual void Scale(const float* x, float s, int64_t n, float* out) = 0;
  virtual void Add(const float* a, const float* b, int64_t n, float* out) = 0;
  // dst[i] = src[rows[i]] for rows of `dim` floats; `rows` is the step's
  // logit_rows.
  virtual void GatherRows(const float* src, const int32_t* rows,
                          int64_t n_rows, int64_t dim, float* dst) = 0;
};

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_BACKEND_H_
