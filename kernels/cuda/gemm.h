// Weight GEMMs through cuBLASLt: out[t][r] = dot(row r of W, x[t]) with W in
// F16 or BF16 and x, out in f32 (x is rounded to W's type; f32 accumulate).
//
// Batch invariance (DESIGN.md invariant 5) with a library GEMM: cuBLAS picks
// kernels, tiles and split-K by shape, so a token's row would change with
// the batch size. Here every GEMM has the same shape: tokens go through in
// chunks of exactly `columns` (the last chunk zero-padded), each with one
// algorithm fixed per weight shape at first use. Before fixing it, the
// algorithm is checked on random data to give bitwise the same column
// whatever the column's place in the chunk and its neighbours, and the same
// bits twice (a kernel whose reduction depends on the tile's place, or that
// reduces with atomics, fails), so a token's output is the same in a
// prefill chunk and in a decode step. Of the candidates that pass, the
// fastest on the device is kept, timed with the weight streaming from
// memory as in a decode step (never from L2).
#ifndef KVSESSION_KERNELS_CUDA_GEMM_H_
#define KVSESSION_KERNELS_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <memory>
#include <string>
#include <tuple>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/kv_cache_view.h"

namespace kvsession::kernels::cuda {

class Gemm {
 public:
  struct Options {
    // Tokens per GEMM. Decode at batch <= columns costs one weight read, as
    // it must; prefill runs ceil(n / columns) GEMMs.
    int32_t columns = 64;
    size_t workspace_bytes = size_t{32} << 20;
  };
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(const Options& options,
                                                      cudaStream_t stream);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Chooses and checks the algorithm for W's shape (runs kernels and waits;
  // called when a weight is prepared). Idempotent.
  absl::Status Prepare(const WeightView& w);
  // Enqueues out = x W^T on the stream given at creation. Prepare(w) must
  // have succeeded. padded_out: out has room for n_tokens rounded up to
  // columns() rows, so whole chunks are written in place (rows past
  // n_tokens get the product of zero inputs); else a partial last chunk goes
  // through a scratch buffer.
  void MatMul(const WeightView& w, const float* x, int64_t n_tokens,
              float* out, bool padded_out = false);
  // The same for several weights of one input width and type: x is
  // rounded once. Weights stored back to back whose joined shape is
  // prepared (Joined) run as one GEMM, whose output rows are split into
  // `outs` (padded_out only): small GEMMs such as K and V of a GQA model
  // read their weights far below the bandwidth a single wide one reaches.
  void MatMuls(std::span<const WeightView* const> ws, const float* x,
               int64_t n_tokens, std::span<float* const> outs,
               bool padded_out);
  // MatMuls whose rounded input an op of the caller writes: `fill(input,
  // rows)` must enqueue `rows` (n_tokens rounded up to columns()) rows of
  // the weights' width in their type into `input`, rows past n_tokens zero
  // (LaunchAddRmsNormRounded, LaunchSwiGluRounded). padded_out as above.
  void MatMulsFrom(std::span<const WeightView* const> ws, int64_t n_tokens,
                   std::span<float* const> outs, bool padded_out,
                   absl::FunctionRef<void(void* input, int64_t rows)> fill);
  // The one weight that `ws` (same type and width, up to kMaxSplitColumns)
  // form when each starts where the previous ends; false otherwise.
  static bool Joined(std::span<const WeightView* const> ws, WeightView* joined);
  // MatMuls calls that ran as one GEMM (tests).
  int64_t joined_runs() const { return joined_runs_; }

  int32_t columns() const { return options_.columns; }
  // Changes whenever a buffer MatMul uses is reallocated (a recorded CUDA
  // graph that uses the old one is stale).
  uint64_t generation() const { return generation_; }
  // Description of the algorithm chosen for a shape (benchmarks, logs).
  std::string Describe(const WeightView& w) const;

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    int candidate = 0;  // index in the heuristic's list
    int32_t split_k = 1;
    float micros = 0;  // measured when chosen (weight not in L2)
  };
  using Key = std::tuple<int64_t, int64_t, int>;  // rows, cols, type

  Gemm(const Options& options, cudaStream_t stream)
      : options_(options), stream_(stream) {}
  static Key KeyOf(const WeightView& w) {
    return {w.rows, w.cols, static_cast<int>(w.type)};
  }
  absl::Status Reserve(void** buf, size_t* cap, size_t bytes);
  void Run(const Plan& plan, const WeightView& w, const void* x, float* out);
  // The chunks of one weight over input_.
  void RunChunks(const Plan& plan, const WeightView& w, int64_t n_tokens,
                 float* out, bool padded_out);

  Options options_;
  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  void* input_ = nullptr;  // x rounded to the weight type, padded
  size_t input_cap_ = 0;
  float* tail_ = nullptr;  // output of a partial last chunk
  size_t tail_cap_ = 0;
  float* joined_out_ = nullptr;  // output of a joined GEMM before its split
  size_t joined_out_cap_ = 0;
  int64_t joined_runs_ = 0;
  std::map<Key, Plan> plans_;
  uint64_t generation_ = 0;
};

}  // namespace kvsession::kernels::cuda

#endif  // KVSESSION_KERNELS_CUDA_GEMM_H_
