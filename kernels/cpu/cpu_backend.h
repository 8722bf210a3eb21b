// Backend on the host CPU: the ops of this folder, OpenMP threads.
#ifndef KVSESSION_KERNELS_CPU_CPU_BACKEND_H_
#define KVSESSION_KERNELS_CPU_CPU_BACKEND_H_

#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/exec.h"
#include "kernels/cpu/ops.h"

namespace kvsession::kernels {

class CpuBackend final : public Backend {
 public:
  struct Options {
    int n_threads = 0;  // 0: all cores
  };
  explicit CpuBackend(const Options& options);

  int n_threads() const { return exec_.n_threads; }

  std::string_view name() const override { return "cpu"; }
  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override;
  absl::StatusOr<WeightView> PrepareWeight(const WeightView& host) override;
  void CopyToHost(const void* src, void* dst, size_t bytes) override;
  void CopyFromHost(const void* src, void* dst, size_t bytes) override;
  void Synchronize() override {}
  absl::StatusOr<std::unique_ptr<Buffer>> AllocateHost(size_t bytes) override {
    return Allocate(bytes);
  }
  void CopyBlocks(const void* src_base, void* dst_base, size_t block_bytes,
                  std::span<const BlockMove> moves) override;
  void FillRandom(GgmlType type, void* dst, int64_t n, uint64_t seed,
                  float scale) override;
  void SampleTokens(const float* logits, int32_t n_rows, int32_t vocab,
                    const SampleRow* rows, int32_t* out) override;

  void Embed(const WeightView& table, const int32_t* tokens, int64_t n_tokens,
             float* out) override;
  void RmsNorm(const float* x, const float* weight, int64_t n_rows, int64_t dim,
               float eps, float* out) override;
  void MatMul(const WeightView& w, const float* x, int64_t n_tokens,
              float* out) override;
  void AddBias(const float* x, const float* bias, int64_t n_rows, int64_t dim,
               float* out) override;
  void Rope(float* x, int64_t n_tokens, int32_t n_heads,
            const int32_t* positions, const RopeParams& params) override;
  void KvWrite(const KvCacheView& kv, int32_t layer,
               const TokenPlacement& placement, const float* k,
               const float* v) override;
  void Attention(const KvCacheView& kv, int32_t layer,
                 const TokenPlacement& placement, const float* q,
                 const AttentionParams& params, float* out) override;
  void SwiGlu(const float* gate, const float* up, int64_t n,
              float* out) override;
  void GeGlu(const float* gate, const float* up, int64_t n,
             float* out) override;
  void Scale(const float* x, float s, int64_t n, float* out) override;
  void Add(const float* a, const float* b, int64_t n, float* out) override;
  void GatherRows(const float* src, const int32_t* rows, int64_t n_rows,
                  int64_t dim, float* dst) override;

 private:
  CpuExec exec_;
};

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_CPU_CPU_BACKEND_H_
