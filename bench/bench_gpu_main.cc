// kvsession-bench-gpu: the CUDA backend on one device. Measures the device's
// copy and GEMM peaks, then decode throughput against the memory-bandwidth
// limit, KV block swaps against the bus peak, time to first token with and
// without a cached history, and prefill throughput, for a random model of
// Llama-3-8B's shape and for the default model. Prints markdown tables row by
// row (flushed, so a run cut short keeps what it measured). Never fails on
// speed: the exit status is non-zero only when something errors.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/gpu_model_shapes.h"
#include "bench/gpu_step_breakdown.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/model_config.h"
#include "runtime/sequence_runner.h"

ABSL_FLAG(std::string, model, "",
          "GGUF path of the default model (the 'default' decode shape); "
          "skipped with a note when empty or missing");
ABSL_FLAG(std::string, sections, "peaks,decode,swap,ttft,prefill,breakdown",
          "Sections: peaks, decode, swap, ttft, prefill, breakdown "
          "(peaks are always measured: the other sections compare to them)");
ABSL_FLAG(int32_t, gemm_columns, 64, "Tokens per GEMM of the backend");
ABSL_FLAG(int32_t, decode_steps, 16,
          "Timed decode steps per configuration (after 2 warm-up steps)");
ABSL_FLAG(std::string, shapes, "llama3-8b,default",
          "Models of the decode section: llama3-8b (random bf16 weights) "
          "and default (--model)");

// Early returns of the measuring functions.
#define BENCH_RETURN_IF_ERROR(expr)                                      \
  do {                                                                   \
    if (absl::Status bench_s_ = (expr); !bench_s_.ok()) return bench_s_; \
  } while (0)
#define BENCH_CONCAT_(a, b) a##b
#define BENCH_CONCAT(a, b) BENCH_CONCAT_(a, b)
#define BENCH_ASSIGN_IMPL_(tmp, lhs, ...) \
  auto tmp = (__VA_ARGS__);               \
  if (!tmp.ok()) return tmp.status();     \
  lhs = *std::move(tmp)
// BENCH_ASSIGN_OR_RETURN(declaration, expression giving a StatusOr).
#define BENCH_ASSIGN_OR_RETURN(lhs, ...) \
  BENCH_ASSIGN_IMPL_(BENCH_CONCAT(bench_or_, __LINE__), lhs, __VA_ARGS__)

namespace kvsession {
namespace {

using Clock = std::chrono::steady_clock;
using bench::ChunkFlops;
using bench::DecodeWeightBytes;
using bench::HeadParams;
using bench::LayerMatrixParams;
using bench::Llama3_8B;
using kernels::Buffer;
using kernels::GgmlType;
using kernels::KvCacheView;
using kernels::WeightView;
using kernels::cuda::CudaBackend;
using kernels::cuda::CudaStatus;
using kernels::cuda::Gemm;
using runtime::LogitsMode;
using runtime::Model;
using runtime::ModelConfig;
using runtime::SequenceChunk;
using runtime::SequenceRunner;

constexpr double kGB = 1e9;
constexpr double kGiB = 1073741824.0;
constexpr int32_t kWarmupSteps = 2;
constexpr int32_t kBlockSize = 16;
// The TTFT of a longer history is skipped when its quadratic extrapolation
// from the previous one exceeds this, to keep the run within its budget.
constexpr double kTtftSkipSeconds = 100.0;

template <typename... Args>
void Say(const absl::FormatSpec<Args...>& format, const Args&... args) {
  absl::PrintF(format, args...);
  std::fflush(stdout);
}

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Backend allocation that leaves no error behind: a failed cudaMalloc also
// shows in the next cudaGetLastError, which the ops' launch checks would
// take for a failed launch.
absl::StatusOr<std::unique_ptr<Buffer>> Alloc(CudaBackend& be, size_t bytes,
                                              bool pinned_host = false) {
  absl::StatusOr<std::unique_ptr<Buffer>> b =
      pinned_host ? be.AllocateHost(bytes) : be.Allocate(bytes);
  if (!b.ok()) cudaGetLastError();
  return b;
}

struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  ~Events() {
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
  }
};

// Best time in seconds of `reps` runs of fn (after `warmup` untimed ones),
// each timed by events on `stream`.
absl::StatusOr<double> BestSeconds(cudaStream_t stream, int warmup, int reps,
                                   const std::function<absl::Status()>& fn) {
  Events ev;
  KVS_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ev.start));
  KVS_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ev.stop));
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < warmup + reps; ++i) {
    KVS_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev.start, stream));
    BENCH_RETURN_IF_ERROR(fn());
    KVS_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev.stop, stream));
    KVS_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(ev.stop));
    float ms = 0;
    KVS_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, ev.start, ev.stop));
    if (i >= warmup) best = std::min(best, ms * 1e-3);
  }
  return best;
}

// Best wall time of `reps` runs of fn after one untimed run (fn waits for
// its own work).
absl::StatusOr<double> BestWall(int reps,
                                const std::function<absl::Status()>& fn) {
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < reps + 1; ++i) {
    const Clock::time_point t0 = Clock::now();
    BENCH_RETURN_IF_ERROR(fn());
    if (i > 0) best = std::min(best, Since(t0));
  }
  return best;
}

struct Peaks {
  double d2d_rw = 0;    // bytes/s of a device copy, read + write (HBM traffic)
  double d2d_copy = 0;  // bytes/s copied
  double h2d_pinned = 0;
  double d2h_pinned = 0;
  double h2d_pageable = 0;
  double gemm = 0;  // FLOP/s of the 8192^3 bf16 GEMM
};

std::string Pct(double num, double den) {
  return den > 0 ? absl::StrFormat("%.0f%%", 100.0 * num / den) : "n/a";
}

std::vector<int32_t> RandomTokens(std::mt19937& rng, int32_t n, int32_t vocab) {
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = dist(rng);
  return t;
}

absl::Status MeasurePeaks(CudaBackend& be, Peaks* p) {
  const cudaStream_t s = be.stream();
  Say("## GPU peaks\n\n| measurement | result | notes |\n| --- | --- | --- "
      "|\n");
  {
    const size_t bytes = size_t{2} << 30;
    BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> a, Alloc(be, bytes));
    BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> b, Alloc(be, bytes));
    KVS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(a->data(), 1, bytes, s));
    auto d2d = [&] {
      return CudaStatus(cudaMemcpyAsync(b->data(), a->data(), bytes,
                                        cudaMemcpyDeviceToDevice, s),
                        "cudaMemcpyAsync D2D");
    };
    BENCH_ASSIGN_OR_RETURN(const double t, BestSeconds(s, 1, 5, d2d));
    p->d2d_copy = bytes / t;
    p->d2d_rw = 2.0 * bytes / t;
    Say("| device-to-device cudaMemcpy, 2 GiB | %.0f GB/s read+write "
        "(%.0f GB/s copied) | best of 5; read+write is the HBM traffic "
        "rate, the decode limit below uses it |\n",
        p->d2d_rw / kGB, p->d2d_copy / kGB);
  }
  {
    const size_t bytes = size_t{1} << 30;
    BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> host,
                           Alloc(be, bytes, true));
    BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> dev, Alloc(be, bytes));
    std::memset(host->data(), 1, bytes);
    auto copy = [&](void* dst, const void* src, cudaMemcpyKind kind) {
      return BestSeconds(s, 1, 5, [&] {
        return CudaStatus(cudaMemcpyAsync(dst, src, bytes, kind, s),
                          "cudaMemcpyAsync");
      });
    };
    BENCH_ASSIGN_OR_RETURN(const double h2d, copy(dev->data(), host->data(),
                                                  cudaMemcpyHostToDevice));
    BENCH_ASSIGN_OR_RETURN(const double d2h, copy(host->data(), dev->data(),
                                                  cudaMemcpyDeviceToHost));
    p->h2d_pinned = bytes / h2d;
    p->d2h_pinned = bytes / d2h;
    Say("| host-to-device cudaMemcpy, 1 GiB pinned | %.1f GB/s | best of 5 "
        "|\n| device-to-host cudaMemcpy, 1 GiB pinned | %.1f GB/s | best of "
        "5 |\n",
        p->h2d_pinned / kGB, p->d2h_pinned / kGB);
    std::vector<char> pageable(bytes, 1);
    auto h2d_pageable = [&] {
      KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
          dev->data(), pageable.data(), bytes, cudaMemcpyHostToDevice, s));
      return CudaStatus(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    };
    BENCH_ASSIGN_OR_RETURN(const double pg, BestWall(3, h2d_pageable));
    p->h2d_pageable = bytes / pg;
    Say("| host-to-device cudaMemcpy, 1 GiB pageable | %.1f GB/s | best of 3; "
        "for reference |\n",
        p->h2d_pageable / kGB);
  }
  // The bf16 GEMM peak through Gemm (the backend's cuBLASLt wrapper, with
  // its batch-invariant algorithm choice): one 8192x8192 weight times 8192
  // tokens, in as few chunks as Gemm's column limit allows.
  const int64_t n = 8192;
  BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> w, Alloc(be, n * n * 2));
  BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> x, Alloc(be, n * n * 4));
  BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> out, Alloc(be, n * n * 4));
  be.FillRandom(GgmlType::kBF16, w->data(), n * n, 7,
                std::sqrt(3.0f / static_cast<float>(n)));
  be.FillRandom(GgmlType::kF32, x->data(), n * n, 8, 1.0f);
  be.Synchronize();
  WeightView wv;
  wv.type = GgmlType::kBF16;
  wv.data = w->data();
  wv.rows = n;
  wv.cols = n;
  wv.row_bytes = static_cast<size_t>(n) * 2;
  {
    absl::StatusOr<std::unique_ptr<Gemm>> g =
        absl::InvalidArgumentError("no columns tried");
    int32_t cols = 0;
    for (int32_t c : {8192, 4096}) {
      Gemm::Options o;
      o.columns = c;
      g = Gemm::Create(o, s);
      if (g.ok()) {
        cols = c;
        break;
      }
    }
    if (!g.ok()) return g.status();
    BENCH_RETURN_IF_ERROR((*g)->Prepare(wv));
    auto gemm = [&] {
      (*g)->MatMul(wv, x->as<float>(), n, out->as<float>());
      return absl::OkStatus();
    };
    BENCH_ASSIGN_OR_RETURN(const double t, BestSeconds(s, 2, 10, gemm));
    p->gemm = 2.0 * n * n * n / t;
    Say("| bf16 GEMM, 8192x8192 weight x 8192 tokens (Gemm, %d columns) | "
        "%.0f TFLOP/s | best of 10; 2*8192^3 FLOPs; includes the f32->bf16 "
        "input conversion; %s |\n",
        cols, p->gemm / 1e12, (*g)->Describe(wv));
  }
  // The rate prefill's largest GEMMs get at the backend's --gemm_columns.
  const ModelConfig c8 = Llama3_8B();
  WeightView ffn = wv;
  ffn.rows = c8.ffn_dim;
  ffn.cols = c8.d_model;
  ffn.row_bytes = static_cast<size_t>(ffn.cols) * 2;
  BENCH_RETURN_IF_ERROR(be.RegisterWeight(ffn));
  const int64_t tokens = 4096;  // out: 4096 x 14336 floats fits `out`
  auto gemm = [&] {
    be.MatMul(ffn, x->as<float>(), tokens, out->as<float>());
    return absl::OkStatus();
  };
  BENCH_ASSIGN_OR_RETURN(const double t, BestSeconds(s, 2, 5, gemm));
  Say("| bf16 GEMM, %dx%d weight x %d tokens (backend Gemm, %d columns) | "
      "%.0f TFLOP/s | best of 5; the FFN GEMM of prefill at this "
      "--gemm_columns; %s |\n\n",
      ffn.rows, ffn.cols, tokens, be.gemm().columns(),
      2.0 * ffn.rows * ffn.cols * tokens / t / 1e12, be.gemm().Describe(ffn));
  return absl::OkStatus();
}

absl::Status MeasureSwap(CudaBackend& be, const Peaks& peaks) {
  const ModelConfig c = Llama3_8B();
  const size_t block_bytes =
      static_cast<size_t>(c.KvBytesPerToken()) * kBlockSize;
  const int32_t n = static_cast<int32_t>((size_t{1} << 30) / block_bytes);
  const size_t bytes = block_bytes * n;
  Say("## GPU KV block swaps (CopyBlocks)\n\n%d blocks of %.2f MiB "
      "(Llama-3-8B: %d tokens x %d KV bytes per token), %.2f GiB each way; "
      "best of 3 after one warm-up; %% of the pinned cudaMemcpy peak of the "
      "same direction (target >= 80%%).\n\n| direction | device blocks | "
      "GB/s | %% of pinned peak |\n| --- | --- | --- | --- |\n",
      n, block_bytes / 1048576.0, kBlockSize, c.KvBytesPerToken(),
      bytes / kGiB);
  BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> dev, Alloc(be, bytes));
  BENCH_ASSIGN_OR_RETURN(std::unique_ptr<Buffer> host, Alloc(be, bytes, true));
  std::memset(host->data(), 3, bytes);
  std::vector<int32_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937 rng(11);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (const bool to_device : {true, false}) {
    for (const bool shuffled : {false, true}) {
      // The device side's ids are the shuffled ones, the host's in order.
      std::vector<kernels::BlockMove> moves(n);
      for (int32_t i = 0; i < n; ++i) {
        const int32_t d = shuffled ? perm[i] : i;
        moves[i] =
            to_device ? kernels::BlockMove{i, d} : kernels::BlockMove{d, i};
      }
      const void* src = to_device ? host->data() : dev->data();
      void* dst = to_device ? dev->data() : host->data();
      auto swap = [&] {
        be.CopyBlocks(src, dst, block_bytes, moves);
        return absl::OkStatus();
      };
      BENCH_ASSIGN_OR_RETURN(const double t, BestWall(3, swap));
      Say("| %s | %s | %.1f | %s |\n",
          to_device ? "host -> device" : "device -> host",
          shuffled ? "shuffled ids" : "ids 0..n-1 (one run)", bytes / t / kGB,
          Pct(bytes / t, to_device ? peaks.h2d_pinned : peaks.d2h_pinned));
    }
  }
  Say("\n");
  return absl::OkStatus();
}

// Decode steps of `batch` sequences that each hold `ctx` tokens of random
// f16 KV (not prefilled: the weights' and the cache's bytes are what decode
// reads, not their values). A row that does not fit prints as skipped.
absl::Status DecodeRow(CudaBackend& be, Model& model, int32_t batch,
                       int32_t ctx, int32_t steps, const Peaks& peaks) {
  const ModelConfig& c = model.config();
  const int32_t total = kWarmupSteps + steps;
  if (int64_t{ctx} + total > c.context_length) {
    Say("| %d | %d | | skipped: %d + %d steps exceed the context of %d "
        "| | | | | |\n",
        batch, ctx, ctx, total, c.context_length);
    return absl::OkStatus();
  }
  const int32_t per_seq = (ctx + total + kBlockSize - 1) / kBlockSize;
  KvCacheView kv;
  kv.num_blocks = batch * per_seq;
  kv.block_size = kBlockSize;
  kv.n_layers = c.n_layers;
  kv.n_kv_heads = c.n_kv_heads;
  kv.head_dim = c.head_dim;
  const int64_t elems = int64_t{kv.num_blocks} * kv.BlockElems();
  const size_t arena_bytes = static_cast<size_t>(elems) * sizeof(uint16_t);
  // Room for the arena and what the steps allocate besides (the attention
  // workspace, activations), so that an overfull card skips the row instead
  // of failing inside a step.
  const double extra =
      4.0 * kernels::cuda::AttentionWorkspaceFloats(
                batch, c.n_heads, c.head_dim, 64, ctx + total) +
      512.0 * 1048576;
  const kernels::MemoryInfo mem = be.GetMemoryInfo();
  if (static_cast<double>(arena_bytes) + extra >
      static_cast<double>(mem.free_bytes)) {
    Say("| %d | %d | | skipped: out of memory (KV arena %.1f GB, %.1f GB free) "
        "| | | | | |\n",
        batch, ctx, arena_bytes / kGB, mem.free_bytes / kGB);
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<Buffer>> arena = Alloc(be, arena_bytes);
  if (!arena.ok()) {
    Say("| %d | %d | | skipped: out of memory (%s) | | | | | |\n", batch, ctx,
        arena.status().message());
    return absl::OkStatus();
  }
  kv.base = (*arena)->as<uint16_t>();
  kernels::cuda::LaunchFillRandom(GgmlType::kF16, kv.base, elems, 5, 0.5f,
                                  be.stream());
  be.Synchronize();

  // Sequence i owns blocks [i * per_seq, (i + 1) * per_seq).
  std::vector<std::vector<int32_t>> tables(batch);
  for (int32_t i = 0; i < batch; ++i) {
    tables[i].resize(per_seq);
    std::iota(tables[i].begin(), tables[i].end(), i * per_seq);
  }
  // The same steps without and with CUDA graphs, and with either attention
  // partition, side by side.
  struct Mode {
    bool graphs;
    int32_t partition;
  };
  constexpr Mode kModes[] = {{false, 64}, {true, 64}, {true, 256}};
  constexpr int kNumModes = sizeof(kModes) / sizeof(kModes[0]);
  double seconds_by_mode[kNumModes] = {};
  for (int mode = 0; mode < kNumModes; ++mode) {
    be.set_graphs(kModes[mode].graphs);
    be.set_attention_partition(kModes[mode].partition);
    std::mt19937 rng(static_cast<uint32_t>(batch * 100003 + ctx));
    std::vector<SequenceChunk> chunks(batch);
    double seconds = 0;
    for (int32_t step = 0; step < total; ++step) {
      const std::vector<int32_t> tokens =
          RandomTokens(rng, batch, c.vocab_size);
      for (int32_t i = 0; i < batch; ++i) {
        chunks[i].tokens = std::span<const int32_t>(&tokens[i], 1);
        chunks[i].start_pos = ctx + step;
        chunks[i].block_table = tables[i];
        chunks[i].logits = LogitsMode::kLast;
      }
      // Forward synchronizes before it returns; the logits stay on the
      // device (no host vector), as in a step that samples there.
      const Clock::time_point t0 = Clock::now();
      BENCH_RETURN_IF_ERROR(model.Forward(chunks, kv, nullptr));
      if (step >= kWarmupSteps) seconds += Since(t0);
    }
    seconds_by_mode[mode] = seconds;
  }
  be.set_graphs(true);
  be.set_attention_partition(kernels::cuda::kDefaultAttentionPartition);
  arena->reset();  // before the next configuration allocates

  // Bytes of the average timed step: the weights plus the K/V of every
  // attended position (a token at position p reads p + 1 positions).
  const double mean_attended = ctx + kWarmupSteps + (steps - 1) / 2.0 + 1;
  const double bytes = DecodeWeightBytes(c) + static_cast<double>(batch) *
                                                  mean_attended *
                                                  c.KvBytesPerToken();
  const double limit_s = peaks.d2d_rw > 0 ? bytes / peaks.d2d_rw : 0;
  for (int mode = 0; mode < kNumModes; ++mode) {
    const double step_s = seconds_by_mode[mode] / steps;
    Say("| %d | %d | %s | %d | %.1f | %.2f | %.2f | %.2f | %s |\n", batch, ctx,
        kModes[mode].graphs ? "on" : "off", kModes[mode].partition,
        batch / step_s, step_s * 1e3, bytes / kGB, limit_s * 1e3,
        limit_s > 0 ? Pct(limit_s, step_s) : "n/a");
  }
  return absl::OkStatus();
}

absl::Status MeasureDecode(CudaBackend& be, Model& model,
                           const std::string& label,
                           const std::vector<int32_t>& contexts, int32_t steps,
                           const Peaks& peaks) {
  const ModelConfig& c = model.config();
  Say("## GPU decode: %s\n\n%d layers, d_model %d, %d/%d heads, head_dim %d, "
      "ffn %d, vocab %d; weights %.2f GB as stored, %.2f GB read per step "
      "(F16/BF16 matrices and head, not the embedding table); KV %d bytes "
      "per token. Random f16 KV (no prefill), block size %d; a step is one "
      "Forward of `batch` one-token chunks, logits left on the device; %d "
      "warm-up steps, %d timed. Limit = (weight bytes + K/V bytes of the "
      "attended positions) / %.0f GB/s (device copy, read+write).\n\n"
      "Each configuration runs without and with CUDA graphs (steps "
      "replayed), and with attention partitions of 64 and 256 positions.\n\n| "
      "batch | context | graphs | partition | tokens/s | ms/step | GB "
      "read/step | limit ms/step | %% of limit |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      label, c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim,
      c.ffn_dim, c.vocab_size, model.weight_bytes() / kGB,
      DecodeWeightBytes(c) / kGB, c.KvBytesPerToken(), kBlockSize, kWarmupSteps,
      steps, peaks.d2d_rw / kGB);
  for (int32_t ctx : contexts) {
    for (int32_t batch : {1, 8, 64}) {
      BENCH_RETURN_IF_ERROR(DecodeRow(be, model, batch, ctx, steps, peaks));
    }
  }
  Say("\n");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SequenceRunner>> MakeRunner(Model& model,
                                                           int32_t max_tokens,
                                                           int32_t chunk) {
  SequenceRunner::Options o;
  o.max_tokens = max_tokens;
  o.block_size = kBlockSize;
  o.max_chunk = chunk;
  absl::StatusOr<std::unique_ptr<SequenceRunner>> r =
      SequenceRunner::Create(&model, o);
  if (!r.ok()) cudaGetLastError();  // a failed arena allocation
  return r;
}

absl::Status MeasureTtft(Model& model, const Peaks& peaks) {
  const ModelConfig& c = model.config();
  const int32_t kNew = 32;
  const int32_t kMaxTokens = 16384 + 256;
  const int32_t kChunk = 512;
  Say("## GPU time to first token: %s\n\nA turn of %d new tokens after a "
      "history. Re-prefill: a fresh runner prefills history + %d tokens "
      "(chunks of %d). Cached: the runner already holds the history's KV and "
      "prefills only the %d new tokens (best of 3). Both include the last "
      "token's logits reaching the host. FLOPs: 2 x layer matrix parameters "
      "x tokens + 2 x head parameters x 1 logits row + 4 x layers x heads x "
      "head_dim x attended positions; %% of the 8192^3 GEMM peak (%.0f "
      "TFLOP/s).\n\n| history | re-prefill ms | cached ms | ratio | "
      "re-prefill tok/s | re-prefill TFLOP/s | %% of GEMM peak |\n| --- | "
      "--- | --- | --- | --- | --- | --- |\n",
      c.name, kNew, kNew, kChunk, kNew, peaks.gemm / 1e12);
  std::mt19937 rng(17);
  {
    // Grows the activations and the GEMM inputs to a whole chunk, untimed.
    BENCH_ASSIGN_OR_RETURN(std::unique_ptr<SequenceRunner> warm,
                           MakeRunner(model, 1024, kChunk));
    const std::vector<int32_t> t =
        RandomTokens(rng, kChunk + kNew, c.vocab_size);
    std::vector<float> logits;
    BENCH_RETURN_IF_ERROR(warm->Append(t, LogitsMode::kLast, &logits));
  }
  double prev_s = 0;
  int32_t prev_h = 0;
  for (int32_t h : {1024, 4096, 16384}) {
    if (prev_h > 0) {
      const double ratio = static_cast<double>(h) / prev_h;
      const double estimate = prev_s * ratio * ratio;
      if (estimate > kTtftSkipSeconds) {
        Say("| %d | skipped: estimated %.0f s | | | | | |\n", h, estimate);
        continue;
      }
    }
    BENCH_ASSIGN_OR_RETURN(std::unique_ptr<SequenceRunner> r,
                           MakeRunner(model, kMaxTokens, kChunk));
    const std::vector<int32_t> history = RandomTokens(rng, h, c.vocab_size);
    const std::vector<int32_t> turn = RandomTokens(rng, kNew, c.vocab_size);
    std::vector<int32_t> all = history;
    all.insert(all.end(), turn.begin(), turn.end());
    std::vector<float> logits;
    Clock::time_point t0 = Clock::now();
    BENCH_RETURN_IF_ERROR(r->Append(all, LogitsMode::kLast, &logits));
    const double full_s = Since(t0);
    double cached_s = std::numeric_limits<double>::infinity();
    for (int rep = 0; rep < 3; ++rep) {
      r->Truncate(h);
      t0 = Clock::now();
      BENCH_RETURN_IF_ERROR(r->Append(turn, LogitsMode::kLast, &logits));
      cached_s = std::min(cached_s, Since(t0));
    }
    const double flops = ChunkFlops(c, 0, h + kNew, 1);
    Say("| %d | %.1f | %.1f | %.1fx | %.0f | %.1f | %s |\n", h, full_s * 1e3,
        cached_s * 1e3, full_s / cached_s, (h + kNew) / full_s,
        flops / full_s / 1e12, Pct(flops / full_s, peaks.gemm));
    prev_s = full_s;
    prev_h = h;
  }
  Say("\n");
  return absl::OkStatus();
}

absl::Status MeasurePrefill(Model& model, const Peaks& peaks) {
  const ModelConfig& c = model.config();
  const int32_t kPrompt = 4096;
  Say("## GPU prefill: %s\n\nOne %d-token prompt through a fresh sequence "
      "(logits of the last token), best of 2 after a one-chunk warm-up; "
      "FLOPs as in the TTFT table.\n\n| prompt | chunk | ms | tokens/s | "
      "TFLOP/s | %% of GEMM peak |\n| --- | --- | --- | --- | --- | --- |\n",
      c.name, kPrompt);
  std::mt19937 rng(23);
  const std::vector<int32_t> prompt = RandomTokens(rng, kPrompt, c.vocab_size);
  const double flops = ChunkFlops(c, 0, kPrompt, 1);
  for (int32_t chunk : {512, 2048}) {
    BENCH_ASSIGN_OR_RETURN(std::unique_ptr<SequenceRunner> r,
                           MakeRunner(model, kPrompt, chunk));
    std::vector<float> logits;
    BENCH_RETURN_IF_ERROR(
        r->Append(std::span<const int32_t>(prompt).first(chunk),
                  LogitsMode::kLast, &logits));
    double best = std::numeric_limits<double>::infinity();
    for (int rep = 0; rep < 2; ++rep) {
      r->Truncate(0);
      const Clock::time_point t0 = Clock::now();
      BENCH_RETURN_IF_ERROR(r->Append(prompt, LogitsMode::kLast, &logits));
      best = std::min(best, Since(t0));
    }
    Say("| %d | %d | %.1f | %.0f | %.1f | %s |\n", kPrompt, chunk, best * 1e3,
        kPrompt / best, flops / best / 1e12, Pct(flops / best, peaks.gemm));
  }
  Say("\n");
  return absl::OkStatus();
}

std::string Today() {
  return absl::FormatTime("%F %H:%M UTC", absl::Now(), absl::UTCTimeZone());
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "GPU benchmark of the CUDA backend: peaks, decode, KV swaps, TTFT and "
      "prefill; prints markdown tables");
  // --help lists this file's flags (absl looks for the program's name).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "bench_gpu_main");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  // The names of a comma list, or nothing when one is not in `known`.
  auto parse = [](const std::string& list, const std::set<std::string>& known,
                  std::set<std::string>* out) {
    for (absl::string_view v : absl::StrSplit(list, ',', absl::SkipEmpty())) {
      if (known.count(std::string(v)) == 0) {
        std::fprintf(stderr, "unknown name '%s'\n", std::string(v).c_str());
        return false;
      }
      out->insert(std::string(v));
    }
    return true;
  };
  std::set<std::string> sections, shapes;
  if (!parse(absl::GetFlag(FLAGS_sections),
             {"peaks", "decode", "swap", "ttft", "prefill", "breakdown"},
             &sections) ||
      !parse(absl::GetFlag(FLAGS_shapes), {"llama3-8b", "default"}, &shapes)) {
    return 2;
  }
  const int32_t steps = absl::GetFlag(FLAGS_decode_steps);
  if (steps < 1) {
    std::fprintf(stderr, "kvsession-bench-gpu: --decode_steps must be >= 1\n");
    return 2;
  }

  const Clock::time_point start = Clock::now();
  CudaBackend::Options bo;
  bo.gemm_columns = absl::GetFlag(FLAGS_gemm_columns);
  absl::StatusOr<std::unique_ptr<CudaBackend>> backend =
      CudaBackend::Create(bo);
  if (!backend.ok()) {
    std::fprintf(stderr, "kvsession-bench-gpu: %s\n",
                 backend.status().ToString().c_str());
    return 1;
  }
  CudaBackend& be = **backend;
  int runtime_v = 0, driver_v = 0;
  cudaRuntimeGetVersion(&runtime_v);
  cudaDriverGetVersion(&driver_v);
  const kernels::MemoryInfo mem = be.GetMemoryInfo();
  std::vector<std::string> args(argv, argv + argc);
  Say("# kvsession GPU benchmark\n\n- device: %s\n- date: %s\n- CUDA runtime "
      "%d.%d, driver %d.%d\n- device memory: %.1f GB free of %.1f GB\n"
      "- command: `%s`\n\n",
      be.device_name(), Today(), runtime_v / 1000, runtime_v % 1000 / 10,
      driver_v / 1000, driver_v % 1000 / 10, mem.free_bytes / kGB,
      mem.total_bytes / kGB, absl::StrJoin(args, " "));

  bool failed = false;
  // Runs one section; an error is reported and the next section runs.
  auto run = [&](const char* what, const std::function<absl::Status()>& fn) {
    const Clock::time_point t0 = Clock::now();
    const absl::Status s = fn();
    if (!s.ok()) {
      Say("\n**error in %s**: %s\n\n", what, s.ToString());
      std::fprintf(stderr, "kvsession-bench-gpu: %s: %s\n", what,
                   s.ToString().c_str());
      failed = true;
    }
    Say("_(%s: %.1f s)_\n\n", what, Since(t0));
    return s.ok();
  };

  Peaks peaks;
  run("peaks", [&] { return MeasurePeaks(be, &peaks); });
  if (sections.count("swap") != 0) {
    run("swap", [&] { return MeasureSwap(be, peaks); });
  }

  if (sections.count("breakdown") != 0) {
    run("breakdown", [&] {
      return bench::MeasureStepBreakdown(be, Llama3_8B(), 1024, peaks.d2d_rw);
    });
  }
  const bool decode = sections.count("decode") != 0;
  if ((decode && shapes.count("llama3-8b") != 0) ||
      sections.count("ttft") != 0 || sections.count("prefill") != 0) {
    std::unique_ptr<Model> m;
    const bool made = run("creating the Llama-3-8B-shaped model", [&] {
      runtime::RandomWeights rw;
      rw.seed = 1;
      rw.type = GgmlType::kBF16;
      absl::StatusOr<std::unique_ptr<Model>> r =
          Model::CreateRandom(Llama3_8B(), &be, rw);
      if (!r.ok()) {
        cudaGetLastError();  // a failed allocation
        return r.status();
      }
      m = *std::move(r);
      Say("Llama-3-8B-shaped model: %.2f GB of random bf16 weights; %.1f GB "
          "device memory free.\n\n",
          m->weight_bytes() / kGB, be.GetMemoryInfo().free_bytes / kGB);
      return absl::OkStatus();
    });
    if (made && decode && shapes.count("llama3-8b") != 0) {
      run("decode (llama3-8b)", [&] {
        return MeasureDecode(be, *m, m->config().name, {1024, 8192}, steps,
                             peaks);
      });
    }
    if (made && sections.count("ttft") != 0) {
      run("ttft", [&] { return MeasureTtft(*m, peaks); });
    }
    if (made && sections.count("prefill") != 0) {
      run("prefill", [&] { return MeasurePrefill(*m, peaks); });
    }
    m.reset();  // frees its 16 GB before the default model loads
  }

  if (decode && shapes.count("default") != 0) {
    const std::string path = absl::GetFlag(FLAGS_model);
    std::FILE* f = path.empty() ? nullptr : std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
      Say("## GPU decode: default model\n\nskipped: %s\n\n",
          path.empty() ? "--model not given"
                       : absl::StrFormat("%s not found", path));
    } else {
      std::fclose(f);
      // The file's mapping outlives the model.
      std::unique_ptr<runtime::GgufFile> file;
      std::unique_ptr<Model> m;
      const bool loaded = run("loading --model", [&] {
        BENCH_ASSIGN_OR_RETURN(file, runtime::GgufFile::Open(path));
        absl::StatusOr<std::unique_ptr<Model>> r = Model::Load(*file, &be);
        if (!r.ok()) {
          cudaGetLastError();  // a failed allocation
          return r.status();
        }
        m = *std::move(r);
        Say("Default model: %s (%s).\n\n", path, m->config().name);
        return absl::OkStatus();
      });
      if (loaded) {
        // 8192 leaves no room for the steps in an 8192-token context.
        run("decode (default)", [&] {
          return MeasureDecode(
              be, *m,
              m->config().name.empty() ? "default model" : m->config().name,
              {1024, 8000}, steps, peaks);
        });
      }
    }
  }
  Say("Total: %.1f s%s\n", Since(start), failed ? " (with errors)" : "");
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace kvsession

int main(int argc, char** argv) { return kvsession::Main(argc, argv); }
