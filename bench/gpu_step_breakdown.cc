#include "bench/gpu_step_breakdown.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::bench {
namespace {

using kernels::Buffer;
using kernels::GgmlType;
using kernels::WeightView;

constexpr int kReps = 200;

// GPU time of one call of `op`, from a graph of kReps calls.
absl::StatusOr<double> TimeOp(kernels::cuda::CudaBackend& be,
                              const std::function<void()>& op) {
  cudaStream_t s = be.stream();
  op();  // sizes every buffer the op grows
  be.Synchronize();
  cudaGraph_t graph = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(
      cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kReps; ++i) op();
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&exec, graph, 0));
  cudaGraphDestroy(graph);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  KVS_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, s));  // warm
  KVS_CUDA_RETURN_IF_ERROR(cudaEventRecord(a, s));
  KVS_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, s));
  KVS_CUDA_RETURN_IF_ERROR(cudaEventRecord(b, s));
  KVS_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(b));
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(exec);
  return 1e-3 * ms / kReps;
}

}  // namespace

absl::Status MeasureStepBreakdown(kernels::cuda::CudaBackend& be,
                                  const runtime::ModelConfig& c,
                                  int32_t context, double rw_bandwidth) {
  const bool graphs_were = true;
  be.set_graphs(false);  // RunStep stages eagerly, outside our capture
  std::vector<std::unique_ptr<Buffer>> owned;
  auto alloc = [&](size_t bytes) -> void* {
    auto b = be.Allocate(bytes);
    if (!b.ok()) return nullptr;
    owned.push_back(*std::move(b));
    return owned.back()->data();
  };
  auto weight = [&](int64_t rows, int64_t cols) -> absl::StatusOr<WeightView> {
    WeightView w;
    w.type = GgmlType::kBF16;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = static_cast<size_t>(cols) * 2;
    w.data = alloc(static_cast<size_t>(rows * cols) * 2);
    if (w.data == nullptr) return absl::ResourceExhaustedError("weights");
    be.FillRandom(GgmlType::kBF16, const_cast<void*>(w.data), rows * cols, 7,
                  0.02f);
    if (absl::Status s = be.RegisterWeight(w); !s.ok()) return s;
    return w;
  };
  const int64_t d = c.d_model, qd = int64_t{c.n_heads} * c.head_dim,
                kvd = int64_t{c.n_kv_heads} * c.head_dim, f = c.ffn_dim;
  // Q, K and V back to back, as the model stores them (one GEMM), and
  // apart, for comparison.
  absl::StatusOr<WeightView> wqkv = weight(qd + 2 * kvd, d);
  if (!wqkv.ok()) return wqkv.status();
  auto part = [&](int64_t first, int64_t rows) {
    WeightView w = *wqkv;
    w.data = static_cast<const uint8_t*>(w.data) + first * w.row_bytes;
    w.rows = rows;
    return w;
  };
  const WeightView jq = part(0, qd), jk = part(qd, kvd),
                   jv = part(qd + kvd, kvd);
  {
    const WeightView group[3] = {jq, jk, jv};
    if (absl::Status s = be.RegisterWeights(group); !s.ok()) return s;
  }
  absl::StatusOr<WeightView> wq = weight(qd, d), wk = weight(kvd, d),
                             wv = weight(kvd, d), wo = weight(d, qd),
                             wg = weight(f, d), wu = weight(f, d),
                             wd = weight(d, f);
  for (const auto* w : {&wq, &wk, &wv, &wo, &wg, &wu, &wd}) {
    if (!w->ok()) return w->status();
  }
  const int64_t pad = be.RowPadding();
  auto act = [&](int64_t width) {
    auto* p = static_cast<float*>(alloc(pad * width * sizeof(float)));
    be.FillRandom(GgmlType::kF32, p, pad * width, 3, 1.0f);
    return p;
  };
  float *x = act(d), *h = act(std::max(d, qd)), *q = act(qd), *k = act(kvd),
        *v = act(kvd), *att = act(qd), *gate = act(f), *up = act(f);
  float* norm = act(d);
  float* res = act(d);  // the residual each fused norm adds

  kernels::KvCacheView kv;
  kv.block_size = 16;
  kv.n_layers = c.n_layers;
  kv.n_kv_heads = c.n_kv_heads;
  kv.head_dim = c.head_dim;
  kv.num_blocks = context / kv.block_size + 1;
  kv.base = static_cast<uint16_t*>(
      alloc(static_cast<size_t>(kv.num_blocks * kv.BlockElems()) * 2));
  if (kv.base == nullptr) return absl::ResourceExhaustedError("KV arena");
  be.FillRandom(GgmlType::kF16, kv.base, kv.num_blocks * kv.BlockElems(), 5,
                0.5f);
  std::vector<int32_t> table(kv.num_blocks);
  std::iota(table.begin(), table.end(), 0);
  const int32_t token = 7, position = context, row0 = 0;
  const int32_t* tables[1] = {table.data()};
  kernels::TokenPlacement pl;
  pl.n_tokens = 1;
  pl.positions = &position;
  pl.block_tables = tables;
  kernels::StepInputs step;
  step.tokens = &token;
  step.placement = pl;
  step.block_size = kv.block_size;
  step.logit_rows = &row0;
  step.n_logit_rows = 1;
  step.kv_base = kv.base;
  // Stage the step's inputs and keep their device views: the ops below run
  // one at a time outside a step (graphs are off, so staging stays put).
  be.RunStep(step, [&](const kernels::StepViews& v) { pl = v.placement; });
  be.Synchronize();
  kernels::AttentionParams ap;
  ap.n_heads = c.n_heads;
  ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  const double kv_bytes = double(context + 1) * 2 * kvd * 2;  // one layer
  struct Row {
    std::string name;
    std::function<void()> op;
    double bytes;
  };
  auto wbytes = [](const absl::StatusOr<WeightView>& w) {
    return double(w->rows) * w->cols * 2;
  };
  // The ops as Model::Run issues them: each residual add is fused into the
  // next norm, and norms and SwiGLU write the GEMM input directly.
  const std::vector<Row> rows = {
      {"residual add, RmsNorm, Q/K/V as one GEMM, split",
       [&] {
         const WeightView* ws[3] = {&jq, &jk, &jv};
         float* outs[3] = {q, k, v};
         be.AddNormMatMuls(x, res, norm, 1, d, 1e-5f, ws, outs);
       },
       wbytes(wqkv)},
      {"RoPE (q and k), KV write",
       [&] { be.RopeKvWrite(q, c.n_heads, k, v, c.rope, kv, 0, pl); }, 0},
      {absl::StrCat("attention, context ", context, ", partition ",
                    kernels::cuda::kDefaultAttentionPartition),
       [&] { be.Attention(kv, 0, pl, q, ap, att); }, kv_bytes},
      {"output GEMM", [&] { be.MatMul(*wo, att, 1, h); }, wbytes(wo)},
      {"residual add, RmsNorm, gate and up GEMMs",
       [&] {
         const WeightView* ws[2] = {&*wg, &*wu};
         float* outs[2] = {gate, up};
         be.AddNormMatMuls(x, res, norm, 1, d, 1e-5f, ws, outs);
       },
       wbytes(wg) + wbytes(wu)},
      {"SwiGLU, down GEMM", [&] { be.SwiGluMatMul(gate, up, 1, *wd, h); },
       wbytes(wd)},
  };
  std::printf("## GPU decode step, op by op: %s\n\n", c.name.c_str());
  std::printf(
      "| op (one layer, 1 token) | GPU us | bytes read (MB) | us at copy "
      "bandwidth | %% of that |\n|---|---|---|---|---|\n");
  double total = 0, total_limit = 0;
  for (const Row& r : rows) {
    absl::StatusOr<double> t = TimeOp(be, r.op);
    if (!t.ok()) {
      be.set_graphs(graphs_were);
      return t.status();
    }
    const double limit = r.bytes / rw_bandwidth;
    total += *t;
    total_limit += limit;
    std::printf("| %s | %.1f | %.1f | %.1f | %s |\n", r.name.c_str(),
                *t * 1e6, r.bytes / 1e6, limit * 1e6,
                r.bytes > 0 ? absl::StrCat(int(100 * limit / *t + 0.5), "%").c_str()
                            : "");
  }
  std::printf("| **layer** | %.1f | | %.1f | %d%% |\n\n", total * 1e6,
              total_limit * 1e6, int(100 * total_limit / total + 0.5));
  {
    // Q, K and V as three GEMMs, for comparison.
    absl::StatusOr<double> t = TimeOp(be, [&] {
      const WeightView* ws[3] = {&*wq, &*wk, &*wv};
      float* outs[3] = {q, k, v};
      be.AddNormMatMuls(x, res, norm, 1, d, 1e-5f, ws, outs);
    });
    if (!t.ok()) {
      be.set_graphs(graphs_were);
      return t.status();
    }
    std::printf("The first row with Q, K and V as three GEMMs: %.1f us.\n\n",
                *t * 1e6);
  }
  {
    // The other partition size, for comparison in the same run.
    const int32_t other =
        kernels::cuda::kDefaultAttentionPartition == 64 ? 256 : 64;
    be.set_attention_partition(other);
    absl::StatusOr<double> t =
        TimeOp(be, [&] { be.Attention(kv, 0, pl, q, ap, att); });
    be.set_attention_partition(kernels::cuda::kDefaultAttentionPartition);
    if (!t.ok()) {
      be.set_graphs(graphs_were);
      return t.status();
    }
    std::printf(
        "Attention with partitions of %d positions instead: %.1f us.\n\n",
        other, *t * 1e6);
  }
  std::printf("GEMM algorithms chosen (cuBLASLt, %d tokens per GEMM):\n\n",
              be.gemm().columns());
  for (const auto* w : {&wqkv, &wq, &wk, &wo, &wg, &wd}) {
    std::printf("- %lld x %lld: %s\n", static_cast<long long>((*w)->rows),
                static_cast<long long>((*w)->cols),
                be.gemm().Describe(**w).c_str());
  }
  std::printf("\n");
  std::fflush(stdout);
  be.set_graphs(graphs_were);
  return absl::OkStatus();
}

}  // namespace kvsession::bench
