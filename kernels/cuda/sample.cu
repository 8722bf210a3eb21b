// Token sampling on the device, the CPU SampleTokens' contract (ops.h,
// kernels/cpu/sample.cc). One CTA per row, so a row's token depends on its
// own logits and SampleRow only (batch invariance).
//
// Greedy rows (and top_k == 1): a block argmax with the lowest id on ties,
// which is exact in any reduction order.
// Top-k rows: z = logit / temperature (one IEEE division, as on the CPU).
// A 3-pass radix select over order-preserving uint32 keys of the logits
// finds the k-th largest logit X; since x -> x / t is monotone, the
// candidates are every z > X / t plus the lowest-id z == X / t, gathered in
// one pass in id order; cub::BlockRadixSort orders the <= 1024 candidates by
// (z desc, id asc). The softmax sums run sequentially in one thread in that
// order, as on the CPU, so both sides pick the same candidate unless expf's
// last bit (CUDA's expf is within 2 ulp, libm's within 1) moves a
// cumulative sum across the threshold. Everything is exact but those sums,
// so no result depends on the launch shape.
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cfloat>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 1024;  // == kMaxSampleTopK: one candidate a thread
constexpr int kTile = 4 * kThreads;  // elements a block reads per step
static_assert(kThreads == kMaxSampleTopK);

// Radix select digits, most significant first: bits 21..31, 10..20, 0..9.
constexpr int kBins = 2048;

__device__ __forceinline__ float Sanitize(float x) {
  return isnan(x) ? -INFINITY : x;
}

// Order-preserving key of a non-NaN float; -0 and +0 share one key because
// they compare equal (ties then go to the lower id, as on the CPU).
__device__ __forceinline__ uint32_t OrderedKey(float z) {
  const uint32_t b = z == 0.0f ? 0u : __float_as_uint(z);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float KeyToFloat(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

// Calls f(i0, v) once per tile of kTile elements: v holds this thread's 4
// consecutive elements i0..i0+3 (blocked arrangement, so a warp reads 512
// contiguous bytes); f checks i0 + j < vocab itself. Every thread makes the
// same calls (f may hold warp intrinsics and __syncthreads). kUnroll tiles
// are loaded before f runs so that enough loads are in flight for one CTA
// to stream a row.
template <int kUnroll, typename F>
__device__ __forceinline__ void ForEachTile(const float* row, int32_t vocab,
                                            F&& f) {
  // A row starts 16-byte aligned only when the base is and vocab % 4 == 0.
  const bool aligned = (reinterpret_cast<uintptr_t>(row) & 15) == 0;
  for (int64_t base = 0; base < vocab; base += kUnroll * kTile) {
    float4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i0 = base + u * kTile + 4 * int64_t{threadIdx.x};
      if (aligned && i0 + 3 < vocab) {
        v[u] = __ldg(reinterpret_cast<const float4*>(row + i0));
      } else {
        v[u].x = i0 + 0 < vocab ? __ldg(row + i0 + 0) : 0.0f;
        v[u].y = i0 + 1 < vocab ? __ldg(row + i0 + 1) : 0.0f;
        v[u].z = i0 + 2 < vocab ? __ldg(row + i0 + 2) : 0.0f;
        v[u].w = i0 + 3 < vocab ? __ldg(row + i0 + 3) : 0.0f;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + u * kTile >= vocab) break;  // block-uniform
      const float a[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
      f(base + u * kTile + 4 * int64_t{threadIdx.x}, a);
    }
  }
}

struct ArgMax {
  float v;
  int32_t i;
};
struct ArgMaxOp {
  __device__ __forceinline__ ArgMax operator()(const ArgMax& a,
                                               const ArgMax& b) const {
    return (a.v > b.v || (a.v == b.v && a.i < b.i)) ? a : b;
  }
};

using BlockReduceT = cub::BlockReduce<ArgMax, kThreads>;
using BlockScanT = cub::BlockScan<int32_t, kThreads>;
using BlockSortT = cub::BlockRadixSort<uint64_t, kThreads, 1>;

// Phases reuse one union: the sort's temp storage (the largest member)
// is dead before p is written, and the candidates are read into registers
// before the sort starts.
struct Smem {
  union {
    typename BlockReduceT::TempStorage reduce;
    struct {
      typename BlockScanT::TempStorage scan;
      int32_t hist[kBins];
      uint64_t gt[kMaxSampleTopK];  // (~z key << id_bits) | id
      uint64_t eq[kMaxSampleTopK];  // the same, for the lowest-id ties
    } sel;
    typename BlockSortT::TempStorage sort;
    float p[kMaxSampleTopK];  // weights, then p, then cumulative p
  } u;
  uint32_t prefix;  // radix select: key bits fixed so far
  int32_t k_rem;    // how many of the keys matching prefix to take
  int32_t gt_base;  // gather: candidates with z > T placed so far
  int32_t eq_base;  // gather: z == T seen so far (in id order)
  int32_t n_keep;
  int32_t choice;
  float sum;
};

// Argmax of z = logit / temperature (temperature == 0: of the logits).
__device__ int32_t BlockArgMax(const float* row, int32_t vocab,
                               float temperature, Smem& s) {
  ArgMax best{-INFINITY, INT32_MAX};
  ForEachTile<4>(row, vocab, [&](int64_t i0, const float (&v)[4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (i0 + j >= vocab) continue;
      float z = Sanitize(v[j]);
      if (temperature != 0.0f) z = __fdiv_rn(z, temperature);
      const int32_t i = static_cast<int32_t>(i0 + j);
      if (z > best.v || (z == best.v && i < best.i)) best = {z, i};
    }
  });
  const ArgMax r = BlockReduceT(s.u.reduce).Reduce(best, ArgMaxOp());
  return r.i;  // valid in thread 0 only
}

// Radix select over the keys of the (sanitized) logits: returns the key of
// the k-th largest logit (in every thread).
__device__ uint32_t RadixSelect(const float* row, int32_t vocab, int32_t k,
                                Smem& s) {
  const int tid = threadIdx.x;
  const unsigned lane = tid & 31;
  if (tid == 0) {
    s.prefix = 0;
    s.k_rem = k;
  }
  uint32_t mask = 0;
#pragma unroll 1
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
    const uint32_t digit_mask = pass == 2 ? 1023u : 2047u;
    for (int b = tid; b < kBins; b += kThreads) s.u.sel.hist[b] = 0;
    __syncthreads();
    const uint32_t prefix = s.prefix;
    const int32_t k_rem = s.k_rem;
    ForEachTile<4>(row, vocab, [&](int64_t i0, const float (&v)[4]) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t key = OrderedKey(Sanitize(v[j]));
        const bool take = i0 + j < vocab && (key & mask) == prefix;
        // After the first pass most warps have nothing to count.
        if (!__any_sync(0xFFFFFFFFu, take)) continue;
        // Warp-aggregated increment: logits share their top bits (sign and
        // exponent), so one bin would take most of the atomics otherwise.
        const int bin = take ? int((key >> shift) & digit_mask) : kBins;
        const unsigned peers = __match_any_sync(0xFFFFFFFFu, bin);
        if (take && lane == unsigned(__ffs(peers) - 1)) {
          atomicAdd(&s.u.sel.hist[bin], __popc(peers));
        }
      }
    });
    __syncthreads();
    // Bins from the top (thread t holds bins 2047 - 2t and 2046 - 2t): the
    // digit whose bin holds the k_rem-th largest remaining key.
    int32_t count[2] = {s.u.sel.hist[kBins - 1 - 2 * tid],
                        s.u.sel.hist[kBins - 2 - 2 * tid]};
    int32_t incl[2];
    BlockScanT(s.u.sel.scan).InclusiveSum(count, incl);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int32_t excl = incl[j] - count[j];
      if (excl < k_rem && incl[j] >= k_rem) {
        s.prefix = prefix | (uint32_t(kBins - 1 - 2 * tid - j) << shift);
        s.k_rem = k_rem - excl;
      }
    }
    mask |= ~uint32_t{0} << shift;
    __syncthreads();
  }
  return s.prefix;
}

__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* __restrict__ logits, int32_t vocab,
                 const SampleRow* __restrict__ rows,
                 int32_t* __restrict__ out) {
  __shared__ Smem s;
  const int tid = threadIdx.x;
  const float* row = logits + int64_t{blockIdx.x} * vocab;
  const SampleRow params = rows[blockIdx.x];

  // Greedy unless temperature > 0 (NaN included), as on the CPU. The CPU
  // op CHECKs 1 <= top_k <= kMaxSampleTopK; here a bad value is clamped.
  const bool greedy = !(params.temperature > 0.0f);
  const int32_t k =
      min(max(params.top_k, 1), min(int32_t{kMaxSampleTopK}, vocab));
  // As on the CPU: +inf becomes FLT_MAX so that x -> x / t stays monotone
  // (no inf / inf).
  const float temperature = fminf(params.temperature, FLT_MAX);
  if (greedy || k == 1) {
    const int32_t id = BlockArgMax(row, vocab, greedy ? 0.0f : temperature, s);
    if (tid == 0) out[blockIdx.x] = id;
    return;
  }

  // x -> z = x / t is monotone (non-decreasing), so with X the k-th largest
  // logit and T = X / t: fewer than k z exceed T and at least k reach it.
  // The candidates are every z > T and the lowest-id z == T; selecting on
  // the logits keeps the division out of the radix passes.
  const float t_z =
      __fdiv_rn(KeyToFloat(RadixSelect(row, vocab, k, s)), temperature);
  const uint32_t t_key = OrderedKey(t_z);
  const int id_bits = 32 - __clz(vocab - 1);  // vocab >= 2 here

  // Gather in id order: a block scan ranks this tile's ties after earlier
  // tiles', so eq ends with the first k ties by id. Counts are packed (ties
  // low, greater high); a tile holds at most kTile < 2^16 of each.
  if (tid == 0) {
    s.gt_base = 0;
    s.eq_base = 0;
  }
  __syncthreads();
  ForEachTile<2>(row, vocab, [&](int64_t i0, const float (&v)[4]) {
    uint32_t key[4];
    int32_t flags[4], ranks[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      key[j] = OrderedKey(__fdiv_rn(Sanitize(v[j]), temperature));
      flags[j] = i0 + j >= vocab ? 0
                 : key[j] > t_key  ? (1 << 16)
                 : key[j] == t_key ? 1
                                   : 0;
    }
    int32_t total;
    BlockScanT(s.u.sel.scan).ExclusiveSum(flags, ranks, total);
    const int32_t gt_base = s.gt_base;
    const int32_t eq_base = s.eq_base;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint64_t comp = (uint64_t{~key[j]} << id_bits) | uint64_t(i0 + j);
      if (flags[j] == (1 << 16)) {
        // Fewer than k by the argument above; the test guards smem only.
        const int32_t pos = gt_base + (ranks[j] >> 16);
        if (pos < kMaxSampleTopK) s.u.sel.gt[pos] = comp;
      } else if (flags[j] == 1) {
        const int32_t r = eq_base + (ranks[j] & 0xFFFF);
        if (r < kMaxSampleTopK) s.u.sel.eq[r] = comp;
      }
    }
    __syncthreads();  // everyone read the bases and finished the scan
    if (tid == 0) {
      s.gt_base = gt_base + (total >> 16);
      s.eq_base = eq_base + (total & 0xFFFF);
    }
    __syncthreads();
  });
  const int32_t n_gt = min(s.gt_base, k);

  // Ascending composite = z descending (~key), then id ascending.
  uint64_t item[1] = {tid < n_gt ? s.u.sel.gt[tid]
                      : tid < k  ? s.u.sel.eq[tid - n_gt]
                                 : ~uint64_t{0}};
  __syncthreads();
  BlockSortT(s.u.sort).Sort(item, 0, 32 + id_bits);
  const int32_t my_id =
      static_cast<int32_t>(item[0] & ((uint64_t{1} << id_bits) - 1));
  const float my_z = KeyToFloat(~static_cast<uint32_t>(item[0] >> id_bits));
  if (tid == 0) s.sum = my_z;  // z_max: rank 0 after the blocked sort
  __syncthreads();
  const float z_max = s.sum;
  if (tid < k) {
    // As on the CPU: z == z_max weighs exactly 1 (no inf - inf).
    s.u.p[tid] = my_z == z_max ? 1.0f : expf(__fsub_rn(my_z, z_max));
  }
  __syncthreads();
  if (tid == 0) {
    float sum = 0.0f;
    for (int32_t j = 0; j < k; ++j) sum = __fadd_rn(sum, s.u.p[j]);
    s.sum = sum;
  }
  __syncthreads();
  if (tid < k) s.u.p[tid] = __fdiv_rn(s.u.p[tid], s.sum);
  __syncthreads();
  if (tid == 0) {
    float c = 0.0f;  // cumulative p, in place
    for (int32_t j = 0; j < k; ++j) {
      c = __fadd_rn(c, s.u.p[j]);
      s.u.p[j] = c;
    }
    s.n_keep = k;
  }
  __syncthreads();
  // The cumulative sums never decrease, so "first j with c_j >= top_p" and
  // "first j with c_j > threshold" each hold for at most one thread.
  const float top_p = params.top_p;
  if (tid < k && top_p < 1.0f && s.u.p[tid] >= top_p &&
      (tid == 0 || !(s.u.p[tid - 1] >= top_p))) {
    s.n_keep = tid + 1;
  }
  __syncthreads();
  const int32_t n_keep = s.n_keep;
  const float threshold = __fmul_rn(params.u, s.u.p[n_keep - 1]);
  if (tid == 0) s.choice = n_keep - 1;
  __syncthreads();
  if (tid < n_keep && s.u.p[tid] > threshold &&
      (tid == 0 || !(s.u.p[tid - 1] > threshold))) {
    s.choice = tid;
  }
  __syncthreads();
  if (tid == s.choice) out[blockIdx.x] = my_id;
}

}  // namespace

size_t SampleWorkspaceBytes(int32_t /*n_rows*/, int32_t /*vocab*/) {
  return 0;  // all scratch lives in shared memory
}

void LaunchSampleTokens(const float* logits, int32_t n_rows, int32_t vocab,
                        const SampleRow* rows, void* /*workspace*/,
                        int32_t* out, cudaStream_t stream) {
  if (n_rows <= 0) return;
  KVS_CHECK(vocab > 0) << "vocab " << vocab;
  SampleKernel<<<n_rows, kThreads, 0, stream>>>(logits, vocab, rows, out);
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace kvsession::kernels::cuda
