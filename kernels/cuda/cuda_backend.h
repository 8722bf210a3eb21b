// Backend on one CUDA device: the ops of this folder on a compute stream,
// weight GEMMs through cuBLASLt (gemm.h), KV block swaps on a copy stream of
// their own, and the host tier in page-locked memory.
#ifndef KVSESSION_KERNELS_CUDA_CUDA_BACKEND_H_
#define KVSESSION_KERNELS_CUDA_CUDA_BACKEND_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <compare>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "kernels/op_record.h"

namespace kvsession::kernels::cuda {

class CudaBackend final : public Backend {
 public:
  struct Options {
    int device = 0;
    int32_t gemm_columns = 64;  // tokens per GEMM (gemm.h)
    // Record steps of up to gemm_columns tokens as CUDA graphs and replay
    // them for later steps of the same shape (decode), which removes the
    // per-launch CPU cost (hundreds of launches a step).
    bool graphs = true;
    // Positions per attention partition (attention.cu): 64 or 256. A
    // token's attention output depends on it, so it stays fixed while a
    // server runs; KV blocks must divide it.
    int32_t attention_partition = kDefaultAttentionPartition;
    // Cap on the attention workspace: longer batches run attention in
    // slices of tokens (a token's result does not depend on the slice).
    size_t attention_workspace_bytes = size_t{256} << 20;
  };
  // FAILED_PRECONDITION when there is no such device.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(
      const Options& options);
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  const std::string& device_name() const { return device_name_; }
  cudaStream_t stream() const { return stream_; }
  Gemm& gemm() { return *gemm_; }

  absl::StatusOr<std::unique_ptr<Buffer>> Allocate(size_t bytes) override;
  absl::StatusOr<WeightView> PrepareWeight(const WeightView& host) override;
  // One allocation for the group, so that MatMuls runs it as one GEMM.
  absl::StatusOr<std::vector<WeightView>> PrepareWeights(
      std::span<const WeightView> host) override;
  absl::Status RegisterWeights(std::span<const WeightView> ws) override;
  void CopyToHost(const void* src, void* dst, size_t bytes) override;
  void CopyFromHost(const void* src, void* dst, size_t bytes) override;
  void Synchronize() override;
  MemoryInfo GetMemoryInfo() const override;
  absl::StatusOr<std::unique_ptr<Buffer>> AllocateHost(size_t bytes) override;
  void CopyBlocks(const void* src_base, void* dst_base, size_t block_bytes,
                  std::span<const BlockMove> moves) override;
  absl::Status RegisterWeight(const WeightView& w) override {
    return gemm_->Prepare(w);
  }
  // Uploads the inputs in one copy, records the step's ops and runs them
  // with the fusions MatchFusion allows; steps of up to gemm_columns tokens
  // are captured as CUDA graphs and replayed (see Options::graphs).
  void RunStep(const StepInputs& step,
               absl::FunctionRef<void(const StepViews&)> ops) override;
  // Turns step recording on or off (benchmarks compare the two).
  void set_graphs(bool on) { options_.graphs = on; }
  // Benchmarks compare partition sizes in one run; a server never changes
  // it (attention outputs would change between steps).
  void set_attention_partition(int32_t partition);
  absl::Status CheckBlockSize(int32_t block_size) const override;
  // Steps replayed from a recorded graph, and graphs recorded, since start.
  int64_t graph_replays() const { return graph_replays_; }
  int64_t graph_captures() const { return graph_captures_; }
  void FillRandom(GgmlType type, void* dst, int64_t n, uint64_t seed,
                  float scale) override;
  bool samples_on_device() const override { return true; }
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
  // The fused launches RunStep uses in place of runs of ops, public for
  // their tests and the step breakdown benchmark; each runs at once (int
  // arrays in device memory) and is bitwise the op sequence it replaces:
  //  - MatMuls: MatMul of each weight on one input, rounded once;
  //  - AddNormMatMuls: [Add(x, residual -> x)] RmsNorm(x -> s) then MatMuls
  //    of s, the norm rounded straight into the GEMM input (s unwritten);
  //  - SwiGluMatMul: SwiGlu(gate, up -> s) then MatMul(w, s) (s unwritten);
  //  - RopeKvWrite: Rope(q), Rope(k), KvWrite(k, v) in one launch.
  void MatMuls(std::span<const WeightView* const> ws, const float* x,
               int64_t n_tokens, std::span<float* const> outs);
  void AddNormMatMuls(float* x, const float* residual, const float* norm,
                      int64_t n_tokens, int64_t dim, float eps,
                      std::span<const WeightView* const> ws,
                      std::span<float* const> outs);
  void SwiGluMatMul(const float* gate, const float* up, int64_t n_tokens,
                    const WeightView& w, float* out);
  void RopeKvWrite(float* q, int32_t n_heads, float* k, const float* v,
                   const RopeParams& rope, const KvCacheView& kv, int32_t layer,
                   const TokenPlacement& placement);
  int64_t RowPadding() const override { return options_.gemm_columns; }
  void Rope(float* x, int64_t n_tokens, int32_t n_heads,
            const int32_t* positions, const RopeParams& params) override;
  void KvWrite(const KvCacheView& kv, int32_t layer,
               const TokenPlacement& placement, const float* k,
               const float* v) override;
  void Attention(const KvCacheView& kv, int32_t layer,
                 const TokenPlacement& placement, const float* q,
                 const AttentionParams& params, float* out) override;
  void GeGlu(const float* gate, const float* up, int64_t n,
             float* out) override;
  void Scale(const float* x, float s, int64_t n, float* out) override;
  void SwiGlu(const float* gate, const float* up, int64_t n,
              float* out) override;
  void Add(const float* a, const float* b, int64_t n, float* out) override;
  void GatherRows(const float* src, const int32_t* rows, int64_t n_rows,
                  int64_t dim, float* dst) override;

 private:
  explicit CudaBackend(const Options& options) : options_(options) {}
  absl::Status Init();
  // Writes a host weight to dst as `target` (F16 or BF16), dequantizing on
  // the device where the type allows; returns once it has landed.
  absl::Status UploadWeight(const WeightView& host, GgmlType target, void* dst);
  // Grows a device scratch buffer (waits for the kernels using the old one).
  void* Grow(void** buf, size_t* cap, size_t bytes);
  // Stages the step's inputs; true when a recorded graph of its shape has
  // been launched (the step is then done).
  bool Stage(const StepInputs& in);
  // Inside RunStep ops are recorded; otherwise they run at once.
  void Issue(const OpRecord& op);
  void Execute(const OpRecord& op);
  // Runs the recorded ops, fused where MatchFusion allows.
  void Flush();
  void RunFused(FusionKind kind, std::span<const OpRecord> ops);
  void RunAttention(const OpRecord& op);
  // Stages the step in the eager layout (each distinct block table once).
  void StageEager(const StepInputs& in, int32_t max_pos);
  // Stages the step in a layout fixed by (tokens, logit rows, blocks per
  // token) so that a recorded upload replays it; false if it does not fit.
  bool StageFixed(const StepInputs& in, int32_t max_blocks);
  uint64_t Generation() const { return generation_ + gemm_->generation(); }

  Options options_;
  std::string device_name_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t copy_stream_ = nullptr;
  std::mutex copy_mu_;  // one CopyBlocks at a time on the copy stream
  std::unique_ptr<Gemm> gemm_;
  std::vector<void*> weights_;  // PrepareWeight's allocations
  void* convert_ = nullptr;  // raw weight bytes on their way to F16/BF16
  size_t convert_cap_ = 0;

  // The step's inputs: a pinned staging area and its device copy, laid out
  // [tokens][positions][logit rows][block tables][table pointers].
  struct Step {
    int32_t max_position = 0;
    const int32_t* d_tokens = nullptr;
    const int32_t* d_positions = nullptr;
    const int32_t* const* d_tables = nullptr;
    const int32_t* d_logit_rows = nullptr;
  } step_;
  void* staging_host_ = nullptr;
  size_t staging_host_cap_ = 0;
  void* staging_dev_ = nullptr;
  size_t staging_dev_cap_ = 0;
  cudaEvent_t staged_ = nullptr;  // the last upload has read staging_host_
  // Recorded steps, by shape. A step's attention grid is sized for a
  // power-of-two number of partitions, so a decode keeps its graph while its
  // context grows within the bucket (results never depend on the grid).
  struct GraphKey {
    int32_t n_tokens = 0;
    int32_t n_logit_rows = 0;
    int32_t n_parts = 0;
    int32_t partition = 0;
    const void* kv_base = nullptr;
    auto operator<=>(const GraphKey&) const = default;
  };
  struct GraphEntry {
    int32_t seen = 0;
    cudaGraphExec_t exec = nullptr;
    uint64_t generation = 0;
  };
  std::map<GraphKey, GraphEntry> graphs_;
  uint64_t generation_ = 0;  // bumped when a buffer ops use is reallocated
  bool capturing_ = false;
  bool recording_ = false;
  std::vector<OpRecord> queue_;
  GraphKey capture_key_;
  void* fixed_host_ = nullptr;  // pinned staging of recorded steps
  void* fixed_dev_ = nullptr;
  int64_t graph_replays_ = 0;
  int64_t graph_captures_ = 0;
  float* attn_ws_ = nullptr;
  size_t attn_ws_cap_ = 0;
  void* sample_ws_ = nullptr;
  size_t sample_ws_cap_ = 0;
};

}  // namespace kvsession::kernels::cuda

#endif  // KVSESSION_KERNELS_CUDA_CUDA_BACKEND_H_
