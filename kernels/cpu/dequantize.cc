// Any GGUF weight type to f32 with ggml's arithmetic (int * float, then the
// offset), so dequantized values match ggml's dequantize_row_* bit for bit.
#include <cstdint>
#include <cstring>

#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/f16.h"

namespace kvsession::kernels {
namespace {

inline uint32_t LoadQh(const uint8_t* qh) {
  uint32_t v;
  std::memcpy(&v, qh, sizeof v);
  return v;
}

void DequantQ4_0(const BlockQ4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQk) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQk / 2; ++j) {
      y[j] = static_cast<float>((x[i].qs[j] & 0x0F) - 8) * d;
      y[j + kQk / 2] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantQ4_1(const BlockQ4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQk) {
    const float d = HalfToFloat(x[i].d);
    const float m = HalfToFloat(x[i].m);
    for (int j = 0; j < kQk / 2; ++j) {
      y[j] = static_cast<float>(x[i].qs[j] & 0x0F) * d + m;
      y[j + kQk / 2] = static_cast<float>(x[i].qs[j] >> 4) * d + m;
    }
  }
}

void DequantQ5_0(const BlockQ5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQk) {
    const float d = HalfToFloat(x[i].d);
    const uint32_t qh = LoadQh(x[i].qh);
    for (int j = 0; j < kQk / 2; ++j) {
      const int h0 = static_cast<int>((qh >> j) & 1) << 4;
      const int h1 = static_cast<int>((qh >> (j + 16)) & 1) << 4;
      y[j] = static_cast<float>(((x[i].qs[j] & 0x0F) | h0) - 16) * d;
      y[j + kQk / 2] = static_cast<float>(((x[i].qs[j] >> 4) | h1) - 16) * d;
    }
  }
}

void DequantQ5_1(const BlockQ5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQk) {
    const float d = HalfToFloat(x[i].d);
    const float m = HalfToFloat(x[i].m);
    const uint32_t qh = LoadQh(x[i].qh);
    for (int j = 0; j < kQk / 2; ++j) {
      const int h0 = static_cast<int>((qh >> j) & 1) << 4;
      const int h1 = static_cast<int>((qh >> (j + 16)) & 1) << 4;
      y[j] = static_cast<float>((x[i].qs[j] & 0x0F) | h0) * d + m;
      y[j + kQk / 2] = static_cast<float>((x[i].qs[j] >> 4) | h1) * d + m;
    }
  }
}

template <typename Block>
void DequantQ8(const Block* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQk) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQk; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void DequantQ8K(const BlockQ8K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQkK) {
    for (int j = 0; j < kQkK; ++j)
      y[j] = static_cast<float>(x[i].qs[j]) * x[i].d;
  }
}

void DequantQ4K(const BlockQ4K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    const float dmin = HalfToFloat(x[i].dmin);
    const uint8_t* q = x[i].qs;
    // Each 32 bytes of qs hold two sub-blocks: low nibbles, then high.
    for (int j = 0; j < 8; j += 2, q += 32) {
      uint8_t sc, m;
      Q4KScaleMin(x[i].scales, j, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      Q4KScaleMin(x[i].scales, j + 1, &sc, &m);
      const float d2 = d * static_cast<float>(sc);
      const float m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        *y++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
      }
    }
  }
}

void DequantQ5K(const BlockQ5K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    const float dmin = HalfToFloat(x[i].dmin);
    const uint8_t* q = x[i].qs;
    const uint8_t* qh = x[i].qh;
    // As Q4_K, plus the fifth bits: chunk c reads bits 2c and 2c + 1 of qh.
    for (int j = 0; j < 8; j += 2, q += 32) {
      uint8_t sc, m;
      Q4KScaleMin(x[i].scales, j, &sc, &m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      Q4KScaleMin(x[i].scales, j + 1, &sc, &m);
      const float d2 = d * static_cast<float>(sc);
      const float m2 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        const int h = ((qh[l] >> j) & 1) << 4;
        *y++ = d1 * static_cast<float>((q[l] & 0x0F) | h) - m1;
      }
      for (int l = 0; l < 32; ++l) {
        const int h = ((qh[l] >> (j + 1)) & 1) << 4;
        *y++ = d2 * static_cast<float>((q[l] >> 4) | h) - m2;
      }
    }
  }
}

void DequantQ6K(const BlockQ6K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = HalfToFloat(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    // Each half (128 elements) uses 64 ql bytes, 32 qh bytes, 8 scales.
    for (int half = 0; half < 2;
         ++half, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace

void DequantizeRow(GgmlType type, const void* src, float* dst, int64_t n) {
  const int64_t be = Traits(type).block_elems;
  KVS_CHECK(n % be == 0) << n << " is not a multiple of " << be;
  const int64_t nb = n / be;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(h[i]);
      return;
    }
    case GgmlType::kBF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = Bf16ToFloat(h[i]);
      return;
    }
    case GgmlType::kQ4_0:
      return DequantQ4_0(static_cast<const BlockQ4_0*>(src), dst, nb);
    case GgmlType::kQ4_1:
      return DequantQ4_1(static_cast<const BlockQ4_1*>(src), dst, nb);
    case GgmlType::kQ5_0:
      return DequantQ5_0(static_cast<const BlockQ5_0*>(src), dst, nb);
    case GgmlType::kQ5_1:
      return DequantQ5_1(static_cast<const BlockQ5_1*>(src), dst, nb);
    case GgmlType::kQ8_0:
      return DequantQ8(static_cast<const BlockQ8_0*>(src), dst, nb);
    case GgmlType::kQ8_1:
      return DequantQ8(static_cast<const BlockQ8_1*>(src), dst, nb);
    case GgmlType::kQ8_K:
      return DequantQ8K(static_cast<const BlockQ8K*>(src), dst, nb);
    case GgmlType::kQ4_K:
      return DequantQ4K(static_cast<const BlockQ4K*>(src), dst, nb);
    case GgmlType::kQ5_K:
      return DequantQ5K(static_cast<const BlockQ5K*>(src), dst, nb);
    case GgmlType::kQ6_K:
      return DequantQ6K(static_cast<const BlockQ6K*>(src), dst, nb);
    default:
      KVS_CHECK(false) << "cannot dequantize " << TypeName(type);
  }
}

}  // namespace kvsession::kernels
