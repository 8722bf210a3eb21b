// GGUF weight types to F16 or BF16 on the device, bitwise equal to the CPU
// DequantizeRow followed by FloatToHalf / FloatToBf16: every block format is
// decoded with the CPU's f32 operations in the CPU's order, each rounded once
// (__fmul_rn / __fadd_rn / __fsub_rn keep nvcc from contracting them into
// fma, which the CPU build never does), and the f32 -> 16-bit conversions are
// the bit manipulations of kernels/f16.cc. One thread makes 8 consecutive
// outputs (one 16-byte store), all inside one quantization block; indices
// are 64-bit since a tensor may exceed 2^31 elements.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/check.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/f16_device.cuh"
#include "kernels/cuda/ops.h"

namespace kvsession::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 8;  // outputs per thread; divides every block size

__device__ __forceinline__ float LoadF16(const uint8_t* p) {
  return F16BitsToF32(*reinterpret_cast<const uint16_t*>(p));
}

__device__ __forceinline__ uint32_t LoadU32Bytes(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) |
         (uint32_t{p[3]} << 24);
}

// Q4KScaleMin of kernels/cpu/quant_blocks.h (a host function there).
__device__ __forceinline__ void Q4KScaleMinDevice(const uint8_t* s, int j,
                                                  int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

__device__ __forceinline__ float IntToF32(int v) {
  return __int2float_rn(v);  // exact for the small ints of the formats
}

// Decodes elements e0 .. e0 + cnt - 1 (cnt == kGroup except at the end of a
// float-type tensor) into v.
template <GgmlType kFrom>
__device__ __forceinline__ void Decode(const uint8_t* __restrict__ src,
                                       int64_t e0, int cnt, float* v) {
  if constexpr (kFrom == GgmlType::kF32) {
    const float* s = reinterpret_cast<const float*>(src) + e0;
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      if (k < cnt) v[k] = s[k];
    }
  } else if constexpr (kFrom == GgmlType::kF16) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src) + e0;
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      if (k < cnt) v[k] = F16BitsToF32(s[k]);
    }
  } else if constexpr (kFrom == GgmlType::kBF16) {
    const uint16_t* s = reinterpret_cast<const uint16_t*>(src) + e0;
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      if (k < cnt) v[k] = __uint_as_float(uint32_t{s[k]} << 16);
    }
  } else if constexpr (kFrom == GgmlType::kQ4_0 || kFrom == GgmlType::kQ4_1) {
    constexpr bool kMin = kFrom == GgmlType::kQ4_1;
    constexpr int kBytes = kMin ? sizeof(BlockQ4_1) : sizeof(BlockQ4_0);
    const uint8_t* b = src + (e0 / kQk) * kBytes;
    const int j0 = static_cast<int>(e0 % kQk);
    const float d = LoadF16(b);
    const float m = kMin ? LoadF16(b + 2) : 0.0f;
    const uint8_t* qs = b + (kMin ? 4 : 2);
    // Element j < 16: low nibble of qs[j]; j >= 16: high nibble of qs[j-16].
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      const int j = j0 + k;
      const int q = j < kQk / 2 ? (qs[j] & 0x0F) : (qs[j - kQk / 2] >> 4);
      if constexpr (kMin) {
        v[k] = __fadd_rn(__fmul_rn(IntToF32(q), d), m);
      } else {
        v[k] = __fmul_rn(IntToF32(q - 8), d);
      }
    }
  } else if constexpr (kFrom == GgmlType::kQ5_0 || kFrom == GgmlType::kQ5_1) {
    constexpr bool kMin = kFrom == GgmlType::kQ5_1;
    constexpr int kBytes = kMin ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0);
    const uint8_t* b = src + (e0 / kQk) * kBytes;
    const int j0 = static_cast<int>(e0 % kQk);
    const float d = LoadF16(b);
    const float m = kMin ? LoadF16(b + 2) : 0.0f;
    const uint32_t qh = LoadU32Bytes(b + (kMin ? 4 : 2));
    const uint8_t* qs = b + (kMin ? 8 : 6);
    // Bit j of qh is the fifth bit of element j.
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      const int j = j0 + k;
      const int lo = j < kQk / 2 ? (qs[j] & 0x0F) : (qs[j - kQk / 2] >> 4);
      const int q = lo | (static_cast<int>((qh >> j) & 1u) << 4);
      if constexpr (kMin) {
        v[k] = __fadd_rn(__fmul_rn(IntToF32(q), d), m);
      } else {
        v[k] = __fmul_rn(IntToF32(q - 16), d);
      }
    }
  } else if constexpr (kFrom == GgmlType::kQ8_0 || kFrom == GgmlType::kQ8_1) {
    constexpr bool kSum = kFrom == GgmlType::kQ8_1;
    constexpr int kBytes = kSum ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0);
    const uint8_t* b = src + (e0 / kQk) * kBytes;
    const int j0 = static_cast<int>(e0 % kQk);
    const float d = LoadF16(b);
    const int8_t* qs = reinterpret_cast<const int8_t*>(b + (kSum ? 4 : 2));
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      v[k] = __fmul_rn(IntToF32(qs[j0 + k]), d);
    }
  } else if constexpr (kFrom == GgmlType::kQ4_K) {
    const uint8_t* b = src + (e0 / kQkK) * sizeof(BlockQ4K);
    const int e = static_cast<int>(e0 % kQkK);
    const float d = LoadF16(b);
    const float dmin = LoadF16(b + 2);
    const uint8_t* scales = b + 4;
    // 64-element chunk c: 32 bytes of qs, low nibbles are sub-block 2c,
    // high nibbles sub-block 2c + 1. A group never straddles the two.
    const int c = e / 64;
    const int l0 = e % 64;
    const bool high = l0 >= 32;
    int sc, mn;
    Q4KScaleMinDevice(scales, 2 * c + (high ? 1 : 0), &sc, &mn);
    const float d1 = __fmul_rn(d, IntToF32(sc));
    const float m1 = __fmul_rn(dmin, IntToF32(mn));
    const uint8_t* q = b + 16 + c * 32 + (l0 % 32);
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      const int qv = high ? (q[k] >> 4) : (q[k] & 0x0F);
      v[k] = __fsub_rn(__fmul_rn(d1, IntToF32(qv)), m1);
    }
  } else if constexpr (kFrom == GgmlType::kQ5_K) {
    const uint8_t* b = src + (e0 / kQkK) * sizeof(BlockQ5K);
    const int e = static_cast<int>(e0 % kQkK);
    const float d = LoadF16(b);
    const float dmin = LoadF16(b + 2);
    const uint8_t* scales = b + 4;
    // Q4_K's layout plus qh[32]: bit j of qh[l] is the fifth bit of
    // sub-block j's element l.
    const int c = e / 64;
    const int l0 = e % 64;
    const bool high = l0 >= 32;
    const int sub = 2 * c + (high ? 1 : 0);
    int sc, mn;
    Q4KScaleMinDevice(scales, sub, &sc, &mn);
    const float d1 = __fmul_rn(d, IntToF32(sc));
    const float m1 = __fmul_rn(dmin, IntToF32(mn));
    const uint8_t* qh = b + 16 + (l0 % 32);
    const uint8_t* q = b + 48 + c * 32 + (l0 % 32);
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      const int lo = high ? (q[k] >> 4) : (q[k] & 0x0F);
      const int qv = lo | (((qh[k] >> sub) & 1) << 4);
      v[k] = __fsub_rn(__fmul_rn(d1, IntToF32(qv)), m1);
    }
  } else if constexpr (kFrom == GgmlType::kQ6_K) {
    const uint8_t* b = src + (e0 / kQkK) * sizeof(BlockQ6K);
    const int e = static_cast<int>(e0 % kQkK);
    const float d = LoadF16(b + 208);
    // Each half of 128 elements uses 64 ql bytes, 32 qh bytes, 8 scales;
    // quarter k of a half takes ql[l] or ql[l + 32], its nibble, and qh bits
    // 2k..2k+1 of qh[l], with scale is + 2k (is = l / 16).
    const int half = e / 128;
    const int quarter = (e % 128) / 32;
    const int l0 = e % 32;
    const uint8_t* ql = b + half * 64 + (quarter & 1) * 32;
    const uint8_t* qh = b + 128 + half * 32;
    const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192) + half * 8;
    const float dsc = __fmul_rn(d, IntToF32(scales[l0 / 16 + 2 * quarter]));
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      const int l = l0 + k;
      const int lo = quarter < 2 ? (ql[l] & 0x0F) : (ql[l] >> 4);
      const int hi = (qh[l] >> (2 * quarter)) & 3;
      v[k] = __fmul_rn(dsc, IntToF32((lo | (hi << 4)) - 32));
    }
  }
}

template <GgmlType kFrom, bool kBf16>
__global__ void __launch_bounds__(kThreads)
    DequantizeKernel(const uint8_t* __restrict__ src, int64_t n,
                     uint16_t* __restrict__ dst, bool aligned16) {
  const int64_t g = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  const int64_t e0 = g * kGroup;
  if (e0 >= n) return;
  const int cnt = n - e0 < kGroup ? static_cast<int>(n - e0) : kGroup;
  float v[kGroup] = {};
  Decode<kFrom>(src, e0, cnt, v);
  uint16_t h[kGroup];
#pragma unroll
  for (int k = 0; k < kGroup; ++k) {
    h[k] = kBf16 ? F32ToBf16Bits(v[k]) : F32ToF16Bits(v[k]);
  }
  if (aligned16 && cnt == kGroup) {
    uint4 w;
    w.x = uint32_t{h[0]} | (uint32_t{h[1]} << 16);
    w.y = uint32_t{h[2]} | (uint32_t{h[3]} << 16);
    w.z = uint32_t{h[4]} | (uint32_t{h[5]} << 16);
    w.w = uint32_t{h[6]} | (uint32_t{h[7]} << 16);
    *reinterpret_cast<uint4*>(dst + e0) = w;
  } else {
    // Constant indices after unrolling keep h in registers.
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      if (k < cnt) dst[e0 + k] = h[k];
    }
  }
}

template <GgmlType kFrom>
void Launch(const void* src, int64_t n, bool bf16, void* dst,
            cudaStream_t stream) {
  const int64_t groups = (n + kGroup - 1) / kGroup;
  const int64_t blocks = (groups + kThreads - 1) / kThreads;
  KVS_CHECK(blocks <= INT32_MAX) << "LaunchDequantize: n " << n;
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint16_t*>(dst);
  const bool aligned16 = reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (bf16) {
    DequantizeKernel<kFrom, true>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s, n, d,
                                                                 aligned16);
  } else {
    DequantizeKernel<kFrom, false>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(s, n, d,
                                                                 aligned16);
  }
  KVS_CUDA_LAUNCH_CHECK();
}

}  // namespace

bool CanDequantize(GgmlType from) {
  switch (from) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ8_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return true;
    default:
      return false;
  }
}

void LaunchDequantize(GgmlType from, const void* src, int64_t n, GgmlType to,
                      void* dst, cudaStream_t stream) {
  KVS_CHECK(CanDequantize(from)) << "LaunchDequantize: from " << TypeName(from);
  KVS_CHECK(to == GgmlType::kF16 || to == GgmlType::kBF16)
      << "LaunchDequantize: to " << TypeName(to);
  KVS_CHECK(n >= 0 && n % Traits(from).block_elems == 0)
      << n << " is not a multiple of " << Traits(from).block_elems;
  if (n == 0) return;
  const bool bf16 = to == GgmlType::kBF16;
  switch (from) {
    case GgmlType::kF32:
      return Launch<GgmlType::kF32>(src, n, bf16, dst, stream);
    case GgmlType::kF16:
      return Launch<GgmlType::kF16>(src, n, bf16, dst, stream);
    case GgmlType::kBF16:
      return Launch<GgmlType::kBF16>(src, n, bf16, dst, stream);
    case GgmlType::kQ4_0:
      return Launch<GgmlType::kQ4_0>(src, n, bf16, dst, stream);
    case GgmlType::kQ4_1:
      return Launch<GgmlType::kQ4_1>(src, n, bf16, dst, stream);
    case GgmlType::kQ5_0:
      return Launch<GgmlType::kQ5_0>(src, n, bf16, dst, stream);
    case GgmlType::kQ5_1:
      return Launch<GgmlType::kQ5_1>(src, n, bf16, dst, stream);
    case GgmlType::kQ8_0:
      return Launch<GgmlType::kQ8_0>(src, n, bf16, dst, stream);
    case GgmlType::kQ8_1:
      return Launch<GgmlType::kQ8_1>(src, n, bf16, dst, stream);
    case GgmlType::kQ4_K:
      return Launch<GgmlType::kQ4_K>(src, n, bf16, dst, stream);
    case GgmlType::kQ5_K:
      return Launch<GgmlType::kQ5_K>(src, n, bf16, dst, stream);
    case GgmlType::kQ6_K:
      return Launch<GgmlType::kQ6_K>(src, n, bf16, dst, stream);
    default:
      break;
  }
}

}  // namespace kvsession::kernels::cuda
