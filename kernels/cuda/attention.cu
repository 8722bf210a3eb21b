// Causal attention over the paged f16 KV cache, split-K over positions
// (flash-decoding) in two kernels:
//
//  1. PartitionKernel, one CTA per (token, KV head [, slice of its query
//     heads], partition j). Partition j holds the absolute positions
//     [j * P, min((j + 1) * P, p + 1)) of a token at position p; CTAs
//     whose partition starts after p exit at once. On a sliding-window
//     layer the partition holds only positions from lo = WindowStart(p)
//     on, and CTAs whose partition ends before lo exit too (blocks before
//     the window are never read: a store may have freed them). For every
//     query head of
//     the GQA group it computes the partition's scores, m = max, e = exp(s -
//     m), l = sum e and acc = sum e * v, and stores (m, l, acc) in the
//     workspace. The group's heads share each K/V load.
//  2. CombineKernel, one CTA per (token, query head): with M = max m_j over
//     the token's partitions, out = (sum_j exp(m_j - M) acc_j) /
//     (sum_j exp(m_j - M) l_j). kGroups thread groups each sum the
//     partitions j = g (mod kGroups) in increasing j, and the groups'
//     sums are added in g order. It runs for one partition too, so every
//     token takes the same path.
//
// Batch invariance: every reduction (dot products, max, sums over a
// partition's positions, the merge over partitions) has an order fixed by
// the token's own position, the partition size P and the constants below;
// nothing depends on the grid, n_tokens or max_position, which only decide
// how many CTAs exist. So a token's output is bitwise the same in a prefill
// batch and alone in a decode step. All arithmetic is spelled with _rn
// intrinsics so that no FMA contraction can differ between template
// instances.
//
// P is 64 or 256, fixed for a backend's lifetime. 64 gives a decode token
// four times as many CTAs, each with a quarter of the serial work (one
// token at 1k context: 128 CTAs instead of 32 on 132 SMs); 256 merges a
// quarter as many partitions, which long prefills read back.
//
// Like the CPU reference, queries are rounded to f16 before they meet K.
// Unlike it, the softmax weights stay f32 (the CPU rounds normalized
// weights to f16, which split-K cannot reproduce: the normalizer is only
// known after the merge), a difference far below the parity tolerance.
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
// Query heads one CTA handles; larger GQA groups are split over grid.y
// (each head's result does not depend on the split).
constexpr int kMaxHeads = 8;
// K rows (scores) or V rows (accumulation) each thread keeps in flight.
constexpr int kKUnroll = 8;
constexpr int kVUnroll = 4;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ void HalfsToFloats(const uint4& raw, float* f) {
  const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 x = __half22float2(h[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

// Workspace: acc [entries][HD] floats, then (m, l) [entries][2], where
// entry = (token * n_heads + head) * n_parts + partition.
struct Workspace {
  float* acc;
  float* ml;
};

__host__ __device__ inline int64_t WorkspaceEntries(int64_t n_tokens,
                                                    int64_t n_heads,
                                                    int64_t n_parts) {
  return n_tokens * n_heads * n_parts;
}

template <int HD, int kPart>
__global__ void __launch_bounds__(kThreads)
    PartitionKernel(KvCacheView kv, int32_t layer,
                    const int32_t* __restrict__ positions,
                    const int32_t* const* __restrict__ block_tables,
                    const float* __restrict__ q, int32_t n_heads, int32_t group,
                    int32_t head_slices, float scale, int32_t window,
                    int32_t n_parts, Workspace ws) {
  // Scores: each K row is split over kRowLanes lanes, 8 elements each (one
  // 16-byte load), reduced by a fixed xor-shuffle tree.
  constexpr int kRowLanes = HD / 8;
  constexpr int kRowsPerWarp = 32 / kRowLanes;
  constexpr int kRowsPerStep = kRowsPerWarp * kWarps;
  // Accumulation: thread (phase, chunk) owns 8 columns `chunk` of every
  // head and the rows i = phase (mod kPhases) of the partition; the phases'
  // sums are added in phase order afterwards.
  constexpr int kChunks = HD / 8;
  constexpr int kPhases = kThreads / kChunks;
  static_assert(HD % 64 == 0 && kRowLanes <= 32 && kThreads % kChunks == 0);

  __shared__ float scores[kMaxHeads][kPart];
  __shared__ __align__(16) float phase_acc[kPhases][kMaxHeads][HD];
  __shared__ int32_t blocks[kPart];
  __shared__ float head_m[kMaxHeads];
  __shared__ float head_l[kMaxHeads];

  const int64_t t = blockIdx.x;
  const int32_t part = blockIdx.z;
  const int32_t pos = positions[t];
  const int32_t start = part * kPart;
  if (pos < start) return;  // partition beyond this token's position
  const int32_t lo = WindowStart(pos, window);
  if (start + kPart <= lo) return;  // partition before the window
  // Rows [i_lo, n) of the partition, counted from its (block-aligned) start.
  const int32_t n = min(kPart, pos + 1 - start);
  const int32_t i_lo = max(0, lo - start);
  const int32_t kv_head = blockIdx.y / head_slices;
  const int32_t slice = blockIdx.y % head_slices;
  const int32_t head0 = kv_head * group + slice * kMaxHeads;
  const int32_t n_h = min(kMaxHeads, group - slice * kMaxHeads);
  const int32_t bs = kv.block_size;

  // The partition's block ids (bs divides kPart: partitions hold whole
  // blocks).
  {
    const int32_t* table = block_tables[t] + start / bs;
    const int32_t n_blocks = (n + bs - 1) / bs;
    for (int32_t i = i_lo / bs + threadIdx.x; i < n_blocks; i += kThreads) {
      blocks[i] = table[i];
    }
  }

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int sub = lane % kRowLanes;
  const int64_t block_elems =
      int64_t{kv.n_layers} * 2 * kv.n_kv_heads * bs * HD;
  const uint16_t* k_base = kv.base + kv.Offset(0, layer, 0, kv_head, 0);
  const uint16_t* v_base = kv.base + kv.Offset(0, layer, 1, kv_head, 0);
  auto row_ptr = [&](const uint16_t* head_base, int32_t i) {
    return head_base + blocks[i / bs] * block_elems + int64_t{i % bs} * HD;
  };

  // This lane's 8 query elements of each head, rounded to f16 like the CPU.
  float qr[kMaxHeads][8];
#pragma unroll
  for (int h = 0; h < kMaxHeads; ++h) {
    const float* qh = q + (t * n_heads + head0 + h) * HD + sub * 8;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      qr[h][e] = h < n_h ? __half2float(__float2half_rn(qh[e])) : 0.0f;
    }
  }
  __syncthreads();  // blocks[]

  // Start V's trip from DRAM to L2 now, so it overlaps the score phase
  // (one prefetch per 128-byte line of the partition's V rows).
  {
    constexpr int kLinesPerRow = HD * 2 / 128;
    for (int32_t idx = i_lo * kLinesPerRow + threadIdx.x;
         idx < n * kLinesPerRow; idx += kThreads) {
      const uint16_t* line =
          row_ptr(v_base, idx / kLinesPerRow) + (idx % kLinesPerRow) * 64;
      asm volatile("prefetch.global.L2 [%0];" ::"l"(line));
    }
  }

  // Scores s[h][i] = dot(q_h, k_i) * scale for rows [i_lo, n).
  for (int32_t i0 = i_lo; i0 < n; i0 += kRowsPerStep * kKUnroll) {
    uint4 raw[kKUnroll];
#pragma unroll
    for (int u = 0; u < kKUnroll; ++u) {
      const int32_t i =
          i0 + u * kRowsPerStep + warp * kRowsPerWarp + lane / kRowLanes;
      raw[u] = make_uint4(0, 0, 0, 0);
      if (i < n) {
        raw[u] =
            __ldg(reinterpret_cast<const uint4*>(row_ptr(k_base, i) + sub * 8));
      }
    }
#pragma unroll
    for (int u = 0; u < kKUnroll; ++u) {
      // Uniform over the CTA, so every lane reaches the shuffles.
      if (i0 + u * kRowsPerStep >= n) break;
      const int32_t i =
          i0 + u * kRowsPerStep + warp * kRowsPerWarp + lane / kRowLanes;
      float kf[8];
      HalfsToFloats(raw[u], kf);
#pragma unroll
      for (int h = 0; h < kMaxHeads; ++h) {
        if (h >= n_h) break;
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot = __fmaf_rn(qr[h][e], kf[e], dot);
#pragma unroll
        for (int off = kRowLanes / 2; off > 0; off /= 2) {
          // Both partners add the same two values: every lane of the row
          // ends with the same bits.
          dot = __fadd_rn(dot, __shfl_xor_sync(kFullMask, dot, off));
        }
        if (sub == 0 && i < n) scores[h][i] = __fmul_rn(dot, scale);
      }
    }
  }
  __syncthreads();

  // Softmax pieces per head, one warp per head: lane-strided max and sum
  // over positions (order fixed by the position), then xor trees.
  for (int h = warp; h < n_h; h += kWarps) {
    float m = -INFINITY;
    for (int32_t i = i_lo + lane; i < n; i += 32) m = fmaxf(m, scores[h][i]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      m = fmaxf(m, __shfl_xor_sync(kFullMask, m, off));
    }
    float l = 0.0f;
    for (int32_t i = i_lo + lane; i < n; i += 32) {
      const float e = expf(__fsub_rn(scores[h][i], m));
      scores[h][i] = e;
      l = __fadd_rn(l, e);
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) {
      l = __fadd_rn(l, __shfl_xor_sync(kFullMask, l, off));
    }
    if (lane == 0) {
      head_m[h] = m;
      head_l[h] = l;
    }
  }
  __syncthreads();

  // acc[h][d] = sum over rows e[h][i] * v_i[d], per phase in row order.
  const int chunk = threadIdx.x % kChunks;
  const int phase = threadIdx.x / kChunks;
  float acc[kMaxHeads][8];
#pragma unroll
  for (int h = 0; h < kMaxHeads; ++h) {
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  }
  for (int32_t i0 = i_lo + phase; i0 < n; i0 += kPhases * kVUnroll) {
    uint4 raw[kVUnroll];
#pragma unroll
    for (int u = 0; u < kVUnroll; ++u) {
      const int32_t i = i0 + u * kPhases;
      raw[u] = make_uint4(0, 0, 0, 0);
      if (i < n) {
        raw[u] = __ldg(
            reinterpret_cast<const uint4*>(row_ptr(v_base, i) + chunk * 8));
      }
    }
#pragma unroll
    for (int u = 0; u < kVUnroll; ++u) {
      const int32_t i = i0 + u * kPhases;
      if (i >= n) break;
      float vf[8];
      HalfsToFloats(raw[u], vf);
#pragma unroll
      for (int h = 0; h < kMaxHeads; ++h) {
        if (h >= n_h) break;
        const float w = scores[h][i];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] = __fmaf_rn(w, vf[e], acc[h][e]);
      }
    }
  }
#pragma unroll
  for (int h = 0; h < kMaxHeads; ++h) {
    if (h >= n_h) break;
    float4* dst = reinterpret_cast<float4*>(&phase_acc[phase][h][chunk * 8]);
    dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
    dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
  }
  __syncthreads();

  const int64_t entry0 = (t * n_heads + head0) * n_parts + part;
  for (int o = threadIdx.x; o < n_h * HD; o += kThreads) {
    const int h = o / HD;
    const int d = o % HD;
    float s = phase_acc[0][h][d];
#pragma unroll
    for (int p = 1; p < kPhases; ++p) s = __fadd_rn(s, phase_acc[p][h][d]);
    ws.acc[(entry0 + int64_t{h} * n_parts) * HD + d] = s;
  }
  if (threadIdx.x < n_h) {
    const int64_t entry = entry0 + int64_t{threadIdx.x} * n_parts;
    ws.ml[entry * 2] = head_m[threadIdx.x];
    ws.ml[entry * 2 + 1] = head_l[threadIdx.x];
  }
}

// One CTA per (token, query head): kGroups groups of HD threads, one thread
// per output element in each group. The partitions' maxima are reduced in
// parallel (max is exact in any order); the weighted sums walk the
// partitions in kGroups interleaved chains, so a token at 8k context with
// P = 64 waits on 32 serial steps per chain rather than 128.
constexpr int kGroups = 4;

template <int HD, int kPart>
__global__ void __launch_bounds__(HD * kGroups)
    CombineKernel(const int32_t* __restrict__ positions, int32_t n_heads,
                  int32_t window, int32_t n_parts, int32_t max_position,
                  Workspace ws, float* __restrict__ out) {
  __shared__ float group_max[HD * kGroups / 32];
  __shared__ float group_num[kGroups][HD];
  __shared__ float group_l[kGroups];
  const int64_t t = blockIdx.x;
  const int32_t h = blockIdx.y;
  const int d = threadIdx.x % HD;
  const int g = threadIdx.x / HD;
  const int32_t pos = positions[t];
  float* o = out + (t * n_heads + h) * HD;
  if (pos < 0 || pos > max_position) {
    // The partitions were never computed: make the broken contract visible.
    if (g == 0) o[d] = NAN;
    return;
  }
  // Partitions [first, parts) hold the token's window.
  const int32_t first = WindowStart(pos, window) / kPart;
  const int32_t parts = pos / kPart + 1;
  const int64_t entry0 = (t * n_heads + h) * n_parts;
  const float* ml = ws.ml + entry0 * 2;
  const float* acc = ws.acc + entry0 * HD + d;

  float m = -INFINITY;
  for (int32_t j = first + threadIdx.x; j < parts; j += HD * kGroups) {
    m = fmaxf(m, ml[2 * j]);
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    m = fmaxf(m, __shfl_xor_sync(kFullMask, m, off));
  }
  if (threadIdx.x % 32 == 0) group_max[threadIdx.x / 32] = m;
  __syncthreads();
  float m_all = -INFINITY;
#pragma unroll
  for (int w = 0; w < HD * kGroups / 32; ++w) {
    m_all = fmaxf(m_all, group_max[w]);
  }

  float l = 0.0f;
  float num = 0.0f;
#pragma unroll 4
  for (int32_t j = first + g; j < parts; j += kGroups) {
    const float w = expf(__fsub_rn(ml[2 * j], m_all));
    l = __fmaf_rn(w, ml[2 * j + 1], l);
    num = __fmaf_rn(w, acc[int64_t{j} * HD], num);
  }
  group_num[g][d] = num;
  if (d == 0) group_l[g] = l;
  __syncthreads();
  if (g != 0) return;
  float l_all = group_l[0];
  float num_all = group_num[0][d];
#pragma unroll
  for (int k = 1; k < kGroups; ++k) {
    l_all = __fadd_rn(l_all, group_l[k]);
    num_all = __fadd_rn(num_all, group_num[k][d]);
  }
  o[d] = __fdiv_rn(num_all, l_all);
}

template <int HD, int kPart>
void LaunchForShape(const KvCacheView& kv, int32_t layer,
                    const TokenPlacement& placement, const float* q,
                    const AttentionParams& params, int32_t max_position,
                    float* workspace, float* out, cudaStream_t stream) {
  const int32_t group = params.n_heads / kv.n_kv_heads;
  const int32_t head_slices = (group + kMaxHeads - 1) / kMaxHeads;
  const int32_t n_parts = max_position / kPart + 1;
  const Workspace ws{
      workspace,
      workspace +
          WorkspaceEntries(placement.n_tokens, params.n_heads, n_parts) * HD};
  // Tokens on grid.x (up to 2^31 - 1); y and z stay within 65535.
  const dim3 grid(static_cast<unsigned>(placement.n_tokens),
                  static_cast<unsigned>(kv.n_kv_heads * head_slices),
                  static_cast<unsigned>(n_parts));
  PartitionKernel<HD, kPart><<<grid, kThreads, 0, stream>>>(
      kv, layer, placement.positions, placement.block_tables, q, params.n_heads,
      group, head_slices, params.scale, params.window, n_parts, ws);
  KVS_CUDA_LAUNCH_CHECK();
  const dim3 combine_grid(static_cast<unsigned>(placement.n_tokens),
                          static_cast<unsigned>(params.n_heads));
  CombineKernel<HD, kPart><<<combine_grid, HD * kGroups, 0, stream>>>(
      placement.positions, params.n_heads, params.window, n_parts,
      max_position, ws, out);
  KVS_CUDA_LAUNCH_CHECK();
}

template <int HD>
void LaunchForHeadDim(const KvCacheView& kv, int32_t layer,
                      const TokenPlacement& placement, const float* q,
                      const AttentionParams& params, int32_t partition,
                      int32_t max_position, float* workspace, float* out,
                      cudaStream_t stream) {
  if (partition == 64) {
    LaunchForShape<HD, 64>(kv, layer, placement, q, params, max_position,
                           workspace, out, stream);
  } else {
    LaunchForShape<HD, 256>(kv, layer, placement, q, params, max_position,
                            workspace, out, stream);
  }
}

}  // namespace

bool IsAttentionPartition(int32_t partition) {
  return partition == 64 || partition == 256;
}

int64_t AttentionWorkspaceFloats(int32_t n_tokens, int32_t n_heads,
                                 int32_t head_dim, int32_t partition,
                                 int32_t max_position) {
  KVS_CHECK(IsAttentionPartition(partition)) << "partition " << partition;
  const int64_t n_parts = int64_t{max_position} / partition + 1;
  return WorkspaceEntries(n_tokens, n_heads, n_parts) * (int64_t{head_dim} + 2);
}

void LaunchAttention(const KvCacheView& kv, int32_t layer,
                     const TokenPlacement& placement, const float* q,
                     const AttentionParams& params, int32_t partition,
                     int32_t max_position, float* workspace, float* out,
                     cudaStream_t stream) {
  const int32_t n_heads = params.n_heads;
  KVS_CHECK(IsAttentionPartition(partition)) << "partition " << partition;
  KVS_CHECK(layer >= 0 && layer < kv.n_layers) << "layer " << layer;
  KVS_CHECK(n_heads > 0 && kv.n_kv_heads > 0 && n_heads % kv.n_kv_heads == 0)
      << "n_heads " << n_heads << " n_kv_heads " << kv.n_kv_heads;
  KVS_CHECK(n_heads <= 65535) << "n_heads " << n_heads;
  KVS_CHECK(kv.block_size > 0 && partition % kv.block_size == 0)
      << "block_size " << kv.block_size << " must divide " << partition;
  KVS_CHECK(max_position >= 0 && max_position / partition + 1 <= 65535)
      << "max_position " << max_position;
  KVS_CHECK(reinterpret_cast<uintptr_t>(kv.base) % 16 == 0)
      << "KV arena must be 16-byte aligned";
  KVS_CHECK(placement.n_tokens >= 0) << "n_tokens " << placement.n_tokens;
  const int32_t group = n_heads / kv.n_kv_heads;
  KVS_CHECK(int64_t{kv.n_kv_heads} * ((group + kMaxHeads - 1) / kMaxHeads) <=
            65535)
      << "n_kv_heads " << kv.n_kv_heads << " group " << group;
  if (placement.n_tokens == 0) return;
  switch (kv.head_dim) {
    case 64:
      LaunchForHeadDim<64>(kv, layer, placement, q, params, partition,
                           max_position, workspace, out, stream);
      break;
    case 128:
      LaunchForHeadDim<128>(kv, layer, placement, q, params, partition,
                            max_position, workspace, out, stream);
      break;
    case 256:
      LaunchForHeadDim<256>(kv, layer, placement, q, params, partition,
                            max_position, workspace, out, stream);
      break;
    default:
      KVS_CHECK(false) << "unsupported head_dim " << kv.head_dim
                       << " (64, 128 or 256)";
  }
}

}  // namespace kvsession::kernels::cuda
