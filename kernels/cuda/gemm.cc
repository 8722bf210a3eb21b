#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"
#include "kernels/ggml_type.h"

namespace kvsession::kernels::cuda {
namespace {

#define KVS_CUBLAS_RETURN_IF_ERROR(expr)                                     \
  do {                                                                       \
    const cublasStatus_t kvs_st_ = (expr);                                   \
    if (kvs_st_ != CUBLAS_STATUS_SUCCESS) {                                  \
      return absl::InternalError(absl::StrCat(#expr, ": cuBLAS status ",     \
                                              static_cast<int>(kvs_st_)));   \
    }                                                                        \
  } while (0)

cudaDataType_t DataType(GgmlType t) {
  return t == GgmlType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
}

// Owns a temporary device allocation of the self-check.
struct Scratch {
  void* p = nullptr;
  ~Scratch() {
    if (p != nullptr) cudaFree(p);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(const Options& options,
                                                   cudaStream_t stream) {
  if (options.columns < 1 || options.columns > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm: columns must be in [1, 4096], got ",
                     options.columns));
  }
  std::unique_ptr<Gemm> g(new Gemm(options, stream));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&g->handle_));
  if (options.workspace_bytes > 0) {
    KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&g->workspace_, options.workspace_bytes));
  }
  return g;
}

Gemm::~Gemm() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  for (auto& [key, p] : plans_) {
    if (p.a != nullptr) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b != nullptr) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c != nullptr) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc != nullptr) cublasLtMatmulDescDestroy(p.desc);
  }
  if (workspace_ != nullptr) cudaFree(workspace_);
  if (input_ != nullptr) cudaFree(input_);
  if (tail_ != nullptr) cudaFree(tail_);
  if (joined_out_ != nullptr) cudaFree(joined_out_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::Status Gemm::Reserve(void** buf, size_t* cap, size_t bytes) {
  if (*cap >= bytes) return absl::OkStatus();
  ++generation_;
  // cudaFree waits for the kernels that may still read the old buffer.
  if (*buf != nullptr) KVS_CUDA_RETURN_IF_ERROR(cudaFree(*buf));
  *buf = nullptr;
  *cap = 0;
  const size_t rounded = (bytes + (size_t{1} << 20) - 1) >> 20 << 20;
  KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(buf, rounded));
  *cap = rounded;
  return absl::OkStatus();
}

void Gemm::Run(const Plan& plan, const WeightView& w, const void* x,
               float* out) {
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const cublasStatus_t st = cublasLtMatmul(
      handle_, plan.desc, &alpha, w.data, plan.a, x, plan.b, &beta, out,
      plan.c, out, plan.c, &plan.algo, workspace_, options_.workspace_bytes,
      stream_);
  KVS_CHECK(st == CUBLAS_STATUS_SUCCESS)
      << "cublasLtMatmul " << w.rows << "x" << w.cols << ": status "
      << static_cast<int>(st);
}

absl::Status Gemm::Prepare(const WeightView& w) {
  if (w.type != GgmlType::kF16 && w.type != GgmlType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm: weights must be F16 or BF16, got ",
                     TypeName(w.type)));
  }
  if (w.row_bytes != static_cast<size_t>(w.cols) * 2) {
    return absl::InvalidArgumentError("gemm: weight rows must be contiguous");
  }
  const Key key = KeyOf(w);
  if (plans_.count(key) != 0) return absl::OkStatus();
  const int64_t M = w.rows;
  const int64_t K = w.cols;
  const int64_t N = options_.columns;
  const cudaDataType_t dt = DataType(w.type);

  Plan plan;
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // out (column-major M x N, ld M) = W^T-as-stored (K x M, ld K)^T * x
  // (K x N, ld K): row-major [rows][cols] weights and [tokens][cols] inputs.
  const cublasOperation_t op_t = CUBLAS_OP_T;
  const cublasOperation_t op_n = CUBLAS_OP_N;
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof op_t));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof op_n));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.a, dt, K, M, K));
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.b, dt, K, N, K));
  KVS_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan.c, CUDA_R_32F, M, N, M));

  cublasLtMatmulPreference_t pref = nullptr;
  KVS_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = options_.workspace_bytes;
  cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  const uint32_t schemes =
      CUBLASLT_REDUCTION_SCHEME_MASK & ~uint32_t{CUBLASLT_REDUCTION_SCHEME_INPLACE};
  cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
      sizeof schemes);
  constexpr int kRequested = 16;
  cublasLtMatmulHeuristicResult_t results[kRequested] = {};
  int returned = 0;
  const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, kRequested,
      results, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (hs != CUBLAS_STATUS_SUCCESS || returned == 0) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
    return absl::InternalError(absl::StrCat(
        "gemm: no cuBLASLt algorithm for ", M, "x", K, "x", N));
  }
  // Split-K is allowed: its split count is fixed by the weight's shape (every
  // GEMM has the same N), so a token's reduction order still never depends
  // on the batch. Its partial sums must be reduced by a separate kernel in
  // a fixed order, not in place in the output (see the preference above).
  // A narrow weight (the K and V projections: 1024 rows) makes few output
  // tiles, too few to stream its bytes at full speed, and the heuristic
  // rarely offers split-K for it: each candidate is also tried with the K
  // loop split 2, 4, 8 and 16 ways.
  std::vector<cublasLtMatmulAlgo_t> algos;
  std::vector<int32_t> splits;
  for (int i = 0; i < returned; ++i) {
    int32_t s = 1;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(
            &results[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &s, sizeof s,
            &written) != CUBLAS_STATUS_SUCCESS ||
        written != sizeof s) {
      s = 1;
    }
    algos.push_back(results[i].algo);
    splits.push_back(std::max<int32_t>(s, 1));
  }
  for (int i = 0; i < returned; ++i) {
    if (splits[i] > 1) continue;
    for (uint32_t split : {2u, 4u, 8u, 16u}) {
      if (K / split < 256) break;
      cublasLtMatmulAlgo_t a = results[i].algo;
      const uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
      if (cublasLtMatmulAlgoConfigSetAttribute(
              &a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split) !=
              CUBLAS_STATUS_SUCCESS ||
          cublasLtMatmulAlgoConfigSetAttribute(
              &a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
              sizeof scheme) != CUBLAS_STATUS_SUCCESS) {
        continue;
      }
      algos.push_back(a);
      splits.push_back(static_cast<int32_t>(split));
    }
  }
  // The self-check: the same random inputs in three column orders, and one
  // order twice (run-to-run determinism).
  const size_t in_bytes = static_cast<size_t>(N * K) * 2;
  const size_t out_floats = static_cast<size_t>(M * N);
  Scratch x0, x1, x2, d0, d1, d2, d3;
  KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&x0.p, in_bytes));
  KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&x1.p, in_bytes));
  KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&x2.p, in_bytes));
  for (Scratch* d : {&d0, &d1, &d2, &d3}) {
    KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&d->p, out_floats * sizeof(float)));
  }
  LaunchFillRandom(w.type, x0.p, N * K, 0x6a09e667f3bcc908ull ^ M ^ (K << 20),
                   1.0f, stream_);
  const int64_t shifts[2] = {1, N / 2 + 3};
  void* rolled[2] = {x1.p, x2.p};
  const size_t row = static_cast<size_t>(K) * 2;
  for (int r = 0; r < 2; ++r) {
    // rolled token j = token (j + s) % N.
    const int64_t s = shifts[r] % N;
    auto* dst = static_cast<uint8_t*>(rolled[r]);
    auto* src = static_cast<const uint8_t*>(x0.p);
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        dst, src + s * row, (N - s) * row, cudaMemcpyDeviceToDevice, stream_));
    if (s > 0) {
      KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst + (N - s) * row, src, s * row,
                                               cudaMemcpyDeviceToDevice,
                                               stream_));
    }
  }
  std::vector<float> h0(out_floats), h1(out_floats), h2(out_floats),
      h3(out_floats);
  std::string tried;
  cudaEvent_t t0 = nullptr, t1 = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(cudaEventCreate(&t0));
  KVS_CUDA_RETURN_IF_ERROR(cudaEventCreate(&t1));
  struct Events {
    cudaEvent_t a, b;
    ~Events() {
      cudaEventDestroy(a);
      cudaEventDestroy(b);
    }
  } events{t0, t1};
  // Candidates are timed as a decode step runs them: every layer's weights
  // stream from memory, so a weight that fits in L2 (a 4096 x 4096 bf16
  // weight is 34 MB; an H100's L2 holds 50 MB) is timed over enough copies
  // of itself to overflow the cache. Timed on one copy it would rank
  // candidates by their speed from L2.
  int device = 0, l2_bytes = 0;
  KVS_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  KVS_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
  const size_t w_bytes = static_cast<size_t>(M * K) * 2;
  int copies = static_cast<int>(std::clamp<size_t>(
      (2 * static_cast<size_t>(l2_bytes) + w_bytes - 1) / w_bytes, 1, 16));
  Scratch w_copies;
  if (copies > 1 && cudaMalloc(&w_copies.p, copies * w_bytes) != cudaSuccess) {
    cudaGetLastError();  // no room for copies: time the weight itself
    w_copies.p = nullptr;
    copies = 1;
  }
  std::vector<WeightView> timed_w(copies, w);
  for (int c = 0; c < copies && w_copies.p != nullptr; ++c) {
    timed_w[c].data = static_cast<uint8_t*>(w_copies.p) + c * w_bytes;
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(const_cast<void*>(timed_w[c].data),
                                             w.data, w_bytes,
                                             cudaMemcpyDeviceToDevice, stream_));
  }
  Plan best;
  int best_index = -1;
  int passed = 0;
  constexpr int kMaxTimed = 24;
  for (int idx = 0; idx < static_cast<int>(algos.size()); ++idx) {
    plan.algo = algos[idx];
    plan.candidate = idx;
    plan.split_k = splits[idx];
    cublasLtMatmulHeuristicResult_t checked{};
    const cublasStatus_t check = cublasLtMatmulAlgoCheck(
        handle_, plan.desc, plan.a, plan.b, plan.c, plan.c, &plan.algo,
        &checked);
    if (check != CUBLAS_STATUS_SUCCESS || checked.workspaceSize > ws) {
      continue;
    }
    Run(plan, w, x0.p, static_cast<float*>(d0.p));
    Run(plan, w, x1.p, static_cast<float*>(d1.p));
    Run(plan, w, x2.p, static_cast<float*>(d2.p));
    Run(plan, w, x0.p, static_cast<float*>(d3.p));
    const size_t bytes = out_floats * sizeof(float);
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h0.data(), d0.p, bytes,
                                             cudaMemcpyDeviceToHost, stream_));
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h1.data(), d1.p, bytes,
                                             cudaMemcpyDeviceToHost, stream_));
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h2.data(), d2.p, bytes,
                                             cudaMemcpyDeviceToHost, stream_));
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h3.data(), d3.p, bytes,
                                             cudaMemcpyDeviceToHost, stream_));
    KVS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    bool ok = std::memcmp(h0.data(), h3.data(), bytes) == 0;
    const std::vector<float>* outs[2] = {&h1, &h2};
    for (int r = 0; r < 2 && ok; ++r) {
      const int64_t s = shifts[r] % N;
      for (int64_t j = 0; j < N && ok; ++j) {
        ok = std::memcmp(outs[r]->data() + j * M,
                         h0.data() + ((j + s) % N) * M, M * sizeof(float)) == 0;
      }
    }
    if (!ok) {
      absl::StrAppend(&tried, tried.empty() ? "" : ", ", idx, " varies");
      continue;
    }
    // Of the candidates that pass, the fastest on this device (decode and
    // prefill both run this one shape).
    Run(plan, timed_w[copies - 1], x0.p, static_cast<float*>(d0.p));
    KVS_CUDA_RETURN_IF_ERROR(cudaEventRecord(t0, stream_));
    const int timed = std::max(5, 2 * copies);
    for (int r = 0; r < timed; ++r) {
      Run(plan, timed_w[r % copies], x0.p, static_cast<float*>(d0.p));
    }
    KVS_CUDA_RETURN_IF_ERROR(cudaEventRecord(t1, stream_));
    KVS_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(t1));
    float ms = 0;
    KVS_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, t0, t1));
    plan.micros = 1000.0f * ms / timed;
    absl::StrAppend(&tried, tried.empty() ? "" : ", ", idx, " ok");
    if (best_index < 0 || plan.micros < best.micros) {
      best = plan;
      best_index = idx;
    }
    if (++passed == kMaxTimed) break;
  }
  if (best_index >= 0) {
    plans_.emplace(key, best);
    return absl::OkStatus();
  }
  cublasLtMatrixLayoutDestroy(plan.a);
  cublasLtMatrixLayoutDestroy(plan.b);
  cublasLtMatrixLayoutDestroy(plan.c);
  cublasLtMatmulDescDestroy(plan.desc);
  return absl::InternalError(absl::StrCat(
      "gemm: no batch-invariant cuBLASLt algorithm for ", M, "x", K, "x", N,
      " (candidates: ", tried, ")"));
}

std::string Gemm::Describe(const WeightView& w) const {
  auto it = plans_.find(KeyOf(w));
  if (it == plans_.end()) return "unprepared";
  int32_t id = -1, tile = -1, stages = -1;
  size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&it->second.algo,
                                       CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id,
                                       &written);
  cublasLtMatmulAlgoConfigGetAttribute(&it->second.algo,
                                       CUBLASLT_ALGO_CONFIG_TILE_ID, &tile,
                                       sizeof tile, &written);
  cublasLtMatmulAlgoConfigGetAttribute(&it->second.algo,
                                       CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages,
                                       sizeof stages, &written);
  return absl::StrCat("algo ", id, " tile ", tile, " stages ", stages,
                      " split-k ", it->second.split_k, " (candidate ",
                      it->second.candidate, ", ", it->second.micros, " us)");
}

void Gemm::MatMul(const WeightView& w, const float* x, int64_t n_tokens,
                  float* out, bool padded_out) {
  const WeightView* ws[1] = {&w};
  float* outs[1] = {out};
  MatMuls(ws, x, n_tokens, outs, padded_out);
}

bool Gemm::Joined(std::span<const WeightView* const> ws, WeightView* joined) {
  if (ws.size() < 2 || ws.size() > static_cast<size_t>(kMaxSplitColumns)) {
    return false;
  }
  *joined = *ws[0];
  for (size_t i = 1; i < ws.size(); ++i) {
    const WeightView& w = *ws[i];
    const auto* end = static_cast<const uint8_t*>(joined->data) +
                      static_cast<size_t>(joined->rows) * joined->row_bytes;
    if (w.type != joined->type || w.cols != joined->cols ||
        w.row_bytes != joined->row_bytes || w.data != end) {
      return false;
    }
    joined->rows += w.rows;
  }
  return true;
}

void Gemm::MatMuls(std::span<const WeightView* const> ws, const float* x,
                   int64_t n_tokens, std::span<float* const> outs,
                   bool padded_out) {
  if (n_tokens <= 0 || ws.empty()) return;
  const WeightView& w0 = *ws[0];
  MatMulsFrom(ws, n_tokens, outs, padded_out,
              [&](void* input, int64_t rows) {
                LaunchConvertRows(x, n_tokens, rows, w0.cols, w0.cols,
                                  w0.type, input, stream_);
              });
}

void Gemm::MatMulsFrom(
    std::span<const WeightView* const> ws, int64_t n_tokens,
    std::span<float* const> outs, bool padded_out,
    absl::FunctionRef<void(void* input, int64_t rows)> fill) {
  if (n_tokens <= 0 || ws.empty()) return;
  const int64_t N = options_.columns;
  const int64_t chunks = (n_tokens + N - 1) / N;
  const WeightView& w0 = *ws[0];
  const size_t row = static_cast<size_t>(w0.cols) * 2;
  KVS_CHECK_OK(Reserve(&input_, &input_cap_, chunks * N * row));
  fill(input_, chunks * N);
  WeightView joined;
  if (padded_out && Joined(ws, &joined)) {
    auto it = plans_.find(KeyOf(joined));
    if (it != plans_.end()) {
      void* buf = joined_out_;
      KVS_CHECK_OK(Reserve(&buf, &joined_out_cap_,
                           static_cast<size_t>(chunks * N * joined.rows) *
                               sizeof(float)));
      joined_out_ = static_cast<float*>(buf);
      RunChunks(it->second, joined, n_tokens, joined_out_, /*padded_out=*/true);
      int64_t widths[kMaxSplitColumns];
      for (size_t i = 0; i < ws.size(); ++i) widths[i] = ws[i]->rows;
      LaunchSplitColumns(joined_out_, n_tokens,
                         std::span<const int64_t>(widths, ws.size()), outs,
                         stream_);
      ++joined_runs_;
      return;
    }
  }
  for (size_t i = 0; i < ws.size(); ++i) {
    const WeightView& w = *ws[i];
    KVS_CHECK(w.cols == w0.cols && w.type == w0.type)
        << "gemm: weights of one input differ in width or type";
    auto it = plans_.find(KeyOf(w));
    KVS_CHECK(it != plans_.end())
        << "gemm: weight " << w.rows << "x" << w.cols << " not prepared";
    RunChunks(it->second, w, n_tokens, outs[i], padded_out);
  }
}

void Gemm::RunChunks(const Plan& plan, const WeightView& w, int64_t n_tokens,
                     float* out, bool padded_out) {
  const int64_t N = options_.columns;
  const int64_t chunks = (n_tokens + N - 1) / N;
  const size_t row = static_cast<size_t>(w.cols) * 2;
  for (int64_t c = 0; c < chunks; ++c) {
    const void* xin = static_cast<const uint8_t*>(input_) + c * N * row;
    float* dst = out + c * N * w.rows;
    const int64_t valid = std::min<int64_t>(N, n_tokens - c * N);
    if (valid == N || padded_out) {
      Run(plan, w, xin, dst);
      continue;
    }
    void* tail = tail_;
    KVS_CHECK_OK(Reserve(&tail, &tail_cap_,
                         static_cast<size_t>(N * w.rows) * sizeof(float)));
    tail_ = static_cast<float*>(tail);
    Run(plan, w, xin, tail_);
    KVS_CUDA_CHECK(cudaMemcpyAsync(dst, tail_,
                                   static_cast<size_t>(valid * w.rows) *
                                       sizeof(float),
                                   cudaMemcpyDeviceToDevice, stream_));
  }
}

}  // namespace kvsession::kernels::cuda
