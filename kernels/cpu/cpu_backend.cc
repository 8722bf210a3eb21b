#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

namespace kvsession::kernels {
namespace {

class HostBuffer final : public Buffer {
 public:
  HostBuffer(void* data, size_t size) : data_(data), size_(size) {}
  ~HostBuffer() override { std::free(data_); }
  void* data() override { return data_; }
  size_t size() const override { return size_; }

 private:
  void* data_;
  size_t size_;
};

}  // namespace

CpuBackend::CpuBackend(const Options& options) {
  exec_.n_threads = options.n_threads > 0
                        ? options.n_threads
                        : static_cast<int>(std::thread::hardware_concurrency());
  if (exec_.n_threads <= 0) exec_.n_threads = 1;
}

absl::StatusOr<std::unique_ptr<Buffer>> CpuBackend::Allocate(size_t bytes) {
  constexpr size_t kAlign = 64;  // one cache line, enough for AVX loads
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded == 0 ? kAlign : rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes of host memory"));
  }
  return std::make_unique<HostBuffer>(p, bytes);
}

absl::StatusOr<WeightView> CpuBackend::PrepareWeight(const WeightView& host) {
  return host;
}

void CpuBackend::CopyToHost(const void* src, void* dst, size_t bytes) {
  std::memcpy(dst, src, bytes);
}

void CpuBackend::CopyFromHost(const void* src, void* dst, size_t bytes) {
  std::memcpy(dst, src, bytes);
}

void CpuBackend::CopyBlocks(const void* src_base, void* dst_base,
                            size_t block_bytes,
                            std::span<const BlockMove> moves) {
  const auto* src = static_cast<const uint8_t*>(src_base);
  auto* dst = static_cast<uint8_t*>(dst_base);
  for (const BlockMove& m : moves) {
    std::memcpy(dst + static_cast<size_t>(m.dst) * block_bytes,
                src + static_cast<size_t>(m.src) * block_bytes, block_bytes);
  }
}

void CpuBackend::FillRandom(GgmlType type, void* dst, int64_t n, uint64_t seed,
                            float scale) {
  kernels::FillRandom(type, dst, n, seed, scale, exec_);
}

void CpuBackend::SampleTokens(const float* logits, int32_t n_rows,
                              int32_t vocab, const SampleRow* rows,
                              int32_t* out) {
  kernels::SampleTokens(logits, n_rows, vocab, rows, out, exec_);
}

void CpuBackend::Embed(const WeightView& table, const int32_t* tokens,
                       int64_t n_tokens, float* out) {
  kernels::Embed(table, tokens, n_tokens, out, exec_);
}

void CpuBackend::RmsNorm(const float* x, const float* weight, int64_t n_rows,
                         int64_t dim, float eps, float* out) {
  kernels::RmsNorm(x, weight, n_rows, dim, eps, out, exec_);
}

void CpuBackend::MatMul(const WeightView& w, const float* x, int64_t n_tokens,
                        float* out) {
  kernels::MatMul(w, x, n_tokens, out, exec_);
}

void CpuBackend::AddBias(const float* x, const float* bias, int64_t n_rows,
                         int64_t dim, float* out) {
  kernels::AddBias(x, bias, n_rows, dim, out, exec_);
}

void CpuBackend::Rope(float* x, int64_t n_tokens, int32_t n_heads,
                      const int32_t* positions, const RopeParams& params) {
  kernels::Rope(x, n_tokens, n_heads, positions, params, exec_);
}

void CpuBackend::KvWrite(const KvCacheView& kv, int32_t layer,
                         const TokenPlacement& placement, const float* k,
                         const float* v) {
  kernels::KvWrite(kv, layer, placement, k, v, exec_);
}

void CpuBackend::Attention(const KvCacheView& kv, int32_t layer,
                           const TokenPlacement& placement, const float* q,
                           const AttentionParams& params, float* out) {
  kernels::Attention(kv, layer, placement, q, params, out, exec_);
}

void CpuBackend::SwiGlu(const float* gate, const float* up, int64_t n,
                        float* out) {
  kernels::SwiGlu(gate, up, n, out, exec_);
}

void CpuBackend::GeGlu(const float* gate, const float* up, int64_t n,
                       float* out) {
  kernels::GeGlu(gate, up, n, out, exec_);
}

void CpuBackend::Scale(const float* x, float s, int64_t n, float* out) {
  kernels::Scale(x, s, n, out, exec_);
}

void CpuBackend::Add(const float* a, const float* b, int64_t n, float* out) {
  kernels::Add(a, b, n, out, exec_);
}

void CpuBackend::GatherRows(const float* src, const int32_t* rows,
                            int64_t n_rows, int64_t dim, float* dst) {
  for (int64_t r = 0; r < n_rows; ++r) {
    std::memcpy(dst + r * dim, src + int64_t{rows[r]} * dim,
                dim * sizeof(float));
  }
}

}  // namespace kvsession::kernels
