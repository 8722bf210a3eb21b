// MatMul throughput on the default model's shapes (SmolLM2-135M): Q4_1
// projections and the Q8_0 output head, decode (1 token) and prefill (512).
// items_per_second counts multiply-accumulates (rows * cols * tokens).
// BM_MatMulSquare compares the quantized types on 2048 x 2048 weights, K-quants
// also through the dequantize + f32 path they took before matmul_k.cc and
// (decode) through the unpack-then-dot kernel before the fused one;
// BM_MatMulKPath compares the K-quant paths at small token counts.
//
//   kvsession-matmul-benchmark --benchmark_filter=...
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/ops.h"
#include "kernels/ggml_type.h"

namespace kvsession::kernels {
namespace {

struct Matrix {
  std::vector<uint8_t> bytes;
  WeightView view;
};

Matrix MakeMatrix(GgmlType type, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-0.1f, 0.1f);
  const size_t row_bytes = *TensorBytes(type, cols);
  Matrix m;
  m.bytes.resize(row_bytes * static_cast<size_t>(rows));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& f : row) f = dist(rng);
    QuantizeRow(type, row.data(), m.bytes.data() + row_bytes * r, cols);
  }
  m.view = {type, m.bytes.data(), rows, cols, row_bytes};
  return m;
}

std::vector<float> Activations(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& f : x) f = dist(rng);
  return x;
}

// Args: type, rows, cols, n_tokens, threads.
void BM_MatMul(benchmark::State& state) {
  const auto type = static_cast<GgmlType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2);
  const int64_t n_tokens = state.range(3);
  const CpuExec exec{static_cast<int>(state.range(4))};
  const Matrix m = MakeMatrix(type, rows, cols, 1);
  const std::vector<float> x = Activations(n_tokens * cols, 2);
  std::vector<float> out(static_cast<size_t>(n_tokens * rows));
  for (auto _ : state) {
    MatMul(m.view, x.data(), n_tokens, out.data(), exec);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * rows * cols * n_tokens);
  state.SetLabel(TypeName(type));
}

void MatMulArgs(benchmark::internal::Benchmark* b) {
  const int64_t q41 = static_cast<int64_t>(GgmlType::kQ4_1);
  const int64_t q80 = static_cast<int64_t>(GgmlType::kQ8_0);
  const int64_t shapes[][3] = {{q41, 576, 576},
                               {q41, 192, 576},
                               {q41, 1536, 576},
                               {q41, 576, 1536},
                               {q80, 49152, 576}};
  b->ArgNames({"type", "rows", "cols", "tokens", "threads"});
  for (const auto& s : shapes) {
    for (int64_t tokens : {1, 512}) {
      for (int64_t threads : {1, 2}) {
        b->Args({s[0], s[1], s[2], tokens, threads});
      }
    }
  }
}
BENCHMARK(BM_MatMul)->Apply(MatMulArgs)->UseRealTime();

// Args: type, n_tokens, threads, path: 0 MatMul; K-quants also 1 (the
// dequantize + f32 dot path) and 2 (kUnpackOne: each super-block unpacked
// to memory, then dotted; the decode path before the fused kernels).
void BM_MatMulSquare(benchmark::State& state) {
  constexpr int64_t kN = 2048;
  const auto type = static_cast<GgmlType>(state.range(0));
  const int64_t n_tokens = state.range(1);
  const CpuExec exec{static_cast<int>(state.range(2))};
  const int64_t path = state.range(3);
  const Matrix m = MakeMatrix(type, kN, kN, 1);
  const std::vector<float> x = Activations(n_tokens * kN, 2);
  std::vector<float> out(static_cast<size_t>(n_tokens * kN));
  for (auto _ : state) {
    if (path == 1) {
      matmul_internal::MatMulViaF32(m.view, x.data(), n_tokens, out.data(),
                                    exec);
    } else if (path == 2) {
      matmul_internal::MatMulKPath(m.view, x.data(), n_tokens, out.data(), exec,
                                   matmul_internal::KPath::kUnpackOne);
    } else {
      MatMul(m.view, x.data(), n_tokens, out.data(), exec);
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kN * kN * n_tokens);
  static const char* const kPathNames[] = {"", " f32", " unpack1"};
  state.SetLabel(std::string(TypeName(type)) + kPathNames[path]);
}

void MatMulSquareArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"type", "tokens", "threads", "path"});
  for (GgmlType t : {GgmlType::kQ4_1, GgmlType::kQ8_0, GgmlType::kQ4_K,
                     GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    const bool k = matmul_internal::IsKQuant(t);
    for (int64_t tokens : {1, 64}) {
      for (int64_t threads : {1, 2}) {
        for (int64_t path = 0; path <= (k ? 2 : 0); ++path) {
          if (path == 2 && tokens > matmul_internal::kKFusedMaxTokens) continue;
          b->Args({static_cast<int64_t>(t), tokens, threads, path});
        }
      }
    }
  }
}
BENCHMARK(BM_MatMulSquare)->Apply(MatMulSquareArgs)->UseRealTime();

// K-quant paths (matmul_internal::KPath) at small token counts, 2048 x
// 2048, one thread: where kFused stops beating kPanel (kKFusedMaxTokens).
// Args: type, n_tokens, path (1 kFused, 2 kPanel, 3 kUnpackOne).
void BM_MatMulKPath(benchmark::State& state) {
  constexpr int64_t kN = 2048;
  const auto type = static_cast<GgmlType>(state.range(0));
  const int64_t n_tokens = state.range(1);
  const auto path = static_cast<matmul_internal::KPath>(state.range(2));
  const Matrix m = MakeMatrix(type, kN, kN, 1);
  const std::vector<float> x = Activations(n_tokens * kN, 2);
  std::vector<float> out(static_cast<size_t>(n_tokens * kN));
  for (auto _ : state) {
    matmul_internal::MatMulKPath(m.view, x.data(), n_tokens, out.data(),
                                 CpuExec{1}, path);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kN * kN * n_tokens);
  static const char* const kNames[] = {"auto", "fused", "panel", "unpack1"};
  state.SetLabel(std::string(TypeName(type)) + " " + kNames[state.range(2)]);
}
BENCHMARK(BM_MatMulKPath)
    ->ArgNames({"type", "tokens", "path"})
    ->ArgsProduct({{static_cast<int64_t>(GgmlType::kQ4_K),
                    static_cast<int64_t>(GgmlType::kQ5_K),
                    static_cast<int64_t>(GgmlType::kQ6_K)},
                   {1, 2, 3, 4, 5, 8, 16},
                   {1, 2, 3}})
    ->UseRealTime();

// One decode step's matmuls over all 30 layers plus the head, every layer
// with its own weights (~96 MB) so they stream from memory as in a real
// forward pass. Reports the time per token.
void BM_DecodeModel(benchmark::State& state) {
  constexpr int kLayers = 30;
  constexpr int64_t kDim = 576, kKv = 192, kFf = 1536, kVocab = 49152;
  const CpuExec exec{static_cast<int>(state.range(0))};
  std::vector<Matrix> layers;
  for (int l = 0; l < kLayers; ++l) {
    const uint32_t s = 100u * static_cast<uint32_t>(l);
    layers.push_back(MakeMatrix(GgmlType::kQ4_1, kDim, kDim, s + 1));  // q
    layers.push_back(MakeMatrix(GgmlType::kQ4_1, kKv, kDim, s + 2));   // k
    layers.push_back(MakeMatrix(GgmlType::kQ4_1, kKv, kDim, s + 3));   // v
    layers.push_back(MakeMatrix(GgmlType::kQ4_1, kDim, kDim, s + 4));  // o
    layers.push_back(MakeMatrix(GgmlType::kQ4_1, kFf, kDim, s + 5));   // gate
    layers.push_back(MakeMatrix(GgmlType::kQ4_1, kFf, kDim, s + 6));   // up
    layers.push_back(MakeMatrix(GgmlType::kQ4_1, kDim, kFf, s + 7));   // down
  }
  const Matrix head = MakeMatrix(GgmlType::kQ8_0, kVocab, kDim, 9);
  const std::vector<float> x = Activations(kFf, 3);
  std::vector<float> out(kVocab);
  int64_t macs = head.view.rows * head.view.cols;
  for (const Matrix& m : layers) macs += m.view.rows * m.view.cols;
  for (auto _ : state) {
    for (const Matrix& m : layers) {
      MatMul(m.view, x.data(), 1, out.data(), exec);
    }
    MatMul(head.view, x.data(), 1, out.data(), exec);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * macs);
}
BENCHMARK(BM_DecodeModel)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One layer's seven Q4_1 projections over a 512-token prefill.
void BM_PrefillLayer(benchmark::State& state) {
  constexpr int64_t kTokens = 512;
  const CpuExec exec{static_cast<int>(state.range(0))};
  const Matrix ms[] = {MakeMatrix(GgmlType::kQ4_1, 576, 576, 1),
                       MakeMatrix(GgmlType::kQ4_1, 192, 576, 2),
                       MakeMatrix(GgmlType::kQ4_1, 192, 576, 3),
                       MakeMatrix(GgmlType::kQ4_1, 576, 576, 4),
                       MakeMatrix(GgmlType::kQ4_1, 1536, 576, 5),
                       MakeMatrix(GgmlType::kQ4_1, 1536, 576, 6),
                       MakeMatrix(GgmlType::kQ4_1, 576, 1536, 7)};
  const std::vector<float> x = Activations(kTokens * 1536, 8);
  std::vector<float> out(static_cast<size_t>(kTokens * 1536));
  int64_t macs = 0;
  for (const Matrix& m : ms) macs += m.view.rows * m.view.cols * kTokens;
  for (auto _ : state) {
    for (const Matrix& m : ms)
      MatMul(m.view, x.data(), kTokens, out.data(), exec);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * macs);
  // Tokens per second of 30 such layers (the model's matmuls minus the head).
  state.counters["model_tok_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kTokens / 30.0,
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PrefillLayer)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvsession::kernels

BENCHMARK_MAIN();
