#include "tests/kernels/naive_ops.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "gtest/gtest.h"

namespace kvsession::kernels::naive {
namespace {

uint16_t Get16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
void Put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v & 0xFF);
  p[1] = uint8_t(v >> 8);
}
uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) |
         (uint32_t(p[3]) << 24);
}
float GetF32(const uint8_t* p) {
  const uint32_t u = Get32(p);
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// 6-bit scale and min of sub-block `sub` from the 12 packed bytes of
// Q4_K/Q5_K.
void KScaleMin(const uint8_t* sc, int sub, int* scale, int* min) {
  if (sub < 4) {
    *scale = sc[sub] & 63;
    *min = sc[sub + 4] & 63;
  } else {
    *scale = (sc[sub + 4] & 15) | ((sc[sub - 4] >> 6) << 4);
    *min = (sc[sub + 4] >> 4) | ((sc[sub] >> 6) << 4);
  }
}

// Decodes element i of a block starting at b.
float BlockElement(GgmlType type, const uint8_t* b, int i) {
  switch (type) {
    case GgmlType::kQ4_0: {  // d | qs[16]
      const int nib = i < 16 ? (b[2 + i] & 15) : (b[2 + i - 16] >> 4);
      return float(nib - 8) * HalfToFloat(Get16(b));
    }
    case GgmlType::kQ4_1: {  // d | m | qs[16]
      const int nib = i < 16 ? (b[4 + i] & 15) : (b[4 + i - 16] >> 4);
      return float(nib) * HalfToFloat(Get16(b)) + HalfToFloat(Get16(b + 2));
    }
    case GgmlType::kQ5_0: {  // d | qh[4] | qs[16]
      const int nib = i < 16 ? (b[6 + i] & 15) : (b[6 + i - 16] >> 4);
      const int hi = (Get32(b + 2) >> i) & 1;
      return float((nib | (hi << 4)) - 16) * HalfToFloat(Get16(b));
    }
    case GgmlType::kQ5_1: {  // d | m | qh[4] | qs[16]
      const int nib = i < 16 ? (b[8 + i] & 15) : (b[8 + i - 16] >> 4);
      const int hi = (Get32(b + 4) >> i) & 1;
      return float(nib | (hi << 4)) * HalfToFloat(Get16(b)) +
             HalfToFloat(Get16(b + 2));
    }
    case GgmlType::kQ8_0:  // d | qs[32]
      return float(int8_t(b[2 + i])) * HalfToFloat(Get16(b));
    case GgmlType::kQ8_1:  // d | s | qs[32]
      return float(int8_t(b[4 + i])) * HalfToFloat(Get16(b));
    case GgmlType::kQ4_K: {    // d | dmin | scales[12] | qs[128]
      const int sub = i / 32;  // 8 sub-blocks of 32
      int scale, min;
      KScaleMin(b + 4, sub, &scale, &min);
      const uint8_t byte = b[16 + (i / 64) * 32 + i % 32];
      const int q = sub % 2 == 0 ? (byte & 15) : (byte >> 4);
      return HalfToFloat(Get16(b)) * float(scale) * float(q) -
             HalfToFloat(Get16(b + 2)) * float(min);
    }
    case GgmlType::kQ5_K: {  // d | dmin | scales[12] | qh[32] | qs[128]
      const int sub = i / 32;
      int scale, min;
      KScaleMin(b + 4, sub, &scale, &min);
      const uint8_t byte = b[48 + (i / 64) * 32 + i % 32];
      const int lo = sub % 2 == 0 ? (byte & 15) : (byte >> 4);
      const int hi = (b[16 + i % 32] >> sub) & 1;  // bit `sub` of qh[i % 32]
      return HalfToFloat(Get16(b)) * float(scale) * float(lo | (hi << 4)) -
             HalfToFloat(Get16(b + 2)) * float(min);
    }
    case GgmlType::kQ8_K:  // f32 d | qs[256] | bsums[16]
      return float(int8_t(b[4 + i])) * GetF32(b);
    case GgmlType::kQ6_K: {  // ql[128] | qh[64] | scales[16] | d
      const int half = i / 128, w = i % 128, g = w / 32, l = w % 32;
      const uint8_t lo_byte = b[half * 64 + l + (g % 2) * 32];
      const int lo = g < 2 ? (lo_byte & 15) : (lo_byte >> 4);
      const int hi = (b[128 + half * 32 + l] >> (2 * g)) & 3;
      const int scale = int8_t(b[192 + half * 8 + l / 16 + 2 * g]);
      return HalfToFloat(Get16(b + 208)) * float(scale) *
             float((lo | (hi << 4)) - 32);
    }
    default:
      ADD_FAILURE() << "no block decoder for " << TypeName(type);
      return 0.0f;
  }
}

}  // namespace

float HalfToFloat(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v;
  if (exp == 0) {
    v = std::ldexp(double(mant), -24);
  } else if (exp == 31) {
    v = mant == 0 ? INFINITY : NAN;
  } else {
    v = std::ldexp(double(1024 + mant), exp - 25);
  }
  return float(sign ? -v : v);
}

uint16_t FloatToHalf(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t(sign | 0x7E00 | ((u >> 13) & 0x3FF));
  }
  const double a = std::fabs(double(f));
  if (a >= 65520.0) return sign | 0x7C00;
  if (a < std::ldexp(1.0, -14)) {
    // Subnormal: multiples of 2^-24 (nearbyint rounds to even).
    return uint16_t(sign | int(std::nearbyint(a * std::ldexp(1.0, 24))));
  }
  int e;
  std::frexp(a, &e);                                   // a in [2^(e-1), 2^e)
  int q = int(std::nearbyint(std::ldexp(a, 11 - e)));  // [1024, 2048]
  int exp = e - 1;
  if (q == 2048) {
    q = 1024;
    ++exp;
  }
  if (exp + 15 >= 31) return sign | 0x7C00;
  return uint16_t(sign | ((exp + 15) << 10) | (q - 1024));
}

float Bf16ToFloat(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return uint16_t((u >> 16) | 0x40);
  // Round to nearest even on the 16 dropped bits.
  const uint32_t lower = u & 0xFFFF;
  uint32_t upper = u >> 16;
  if (lower > 0x8000 || (lower == 0x8000 && (upper & 1))) ++upper;
  return uint16_t(upper);
}

size_t RowBytes(GgmlType type, int64_t n) {
  const TypeTraits& t = Traits(type);
  return size_t(n / t.block_elems * t.block_bytes);
}

std::vector<float> Dequantize(GgmlType type, const void* row, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  std::vector<float> out(size_t(n), 0.0f);
  if (type == GgmlType::kF32) {
    std::memcpy(out.data(), p, size_t(n) * 4);
    return out;
  }
  if (type == GgmlType::kF16 || type == GgmlType::kBF16) {
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t h = Get16(p + 2 * i);
      out[i] = type == GgmlType::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
    }
    return out;
  }
  const TypeTraits& t = Traits(type);
  for (int64_t i = 0; i < n; ++i) {
    out[i] = BlockElement(type, p + (i / t.block_elems) * t.block_bytes,
                          int(i % t.block_elems));
  }
  return out;
}

std::vector<uint8_t> Quantize(GgmlType type, const float* x, int64_t n) {
  std::vector<uint8_t> out(RowBytes(type, n), 0);
  uint8_t* y = out.data();
  if (type == GgmlType::kQ8_K) {  // quantize_row_q8_K_ref
    for (int64_t blk = 0; blk < n / 256; ++blk, x += 256, y += 292) {
      float amax = 0, vmax = 0;
      for (int j = 0; j < 256; ++j) {
        if (std::fabs(x[j]) > amax) {
          amax = std::fabs(x[j]);
          vmax = x[j];
        }
      }
      if (amax == 0) continue;  // d, qs and bsums stay 0
      const float iscale = -128.0f / vmax;
      int q[256];
      for (int j = 0; j < 256; ++j) {
        q[j] = std::min(127, int(std::nearbyint(iscale * x[j])));
        y[4 + j] = uint8_t(int8_t(q[j]));
      }
      for (int g = 0; g < 16; ++g) {
        int sum = 0;
        for (int k = 0; k < 16; ++k) sum += q[16 * g + k];
        Put16(y + 260 + 2 * g, uint16_t(int16_t(sum)));
      }
      const float d = 1.0f / iscale;
      std::memcpy(y, &d, 4);
    }
    return out;
  }
  if (type == GgmlType::kF32) {
    std::memcpy(y, x, size_t(n) * 4);
    return out;
  }
  if (type == GgmlType::kF16 || type == GgmlType::kBF16) {
    for (int64_t i = 0; i < n; ++i) {
      Put16(y + 2 * i,
            type == GgmlType::kF16 ? FloatToHalf(x[i]) : FloatToBf16(x[i]));
    }
    return out;
  }
  const int64_t bytes = Traits(type).block_bytes;
  for (int64_t blk = 0; blk < n / 32; ++blk, x += 32, y += bytes) {
    float amax = 0, vmax = 0, lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
      lo = std::min(lo, x[j]);
      hi = std::max(hi, x[j]);
    }
    int q[32];
    switch (type) {
      case GgmlType::kQ4_0:
      case GgmlType::kQ5_0: {
        const int half = type == GgmlType::kQ4_0 ? 8 : 16;
        const float d = vmax / float(-half);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        for (int j = 0; j < 32; ++j) {
          q[j] = std::min(2 * half - 1,
                          int(int8_t(x[j] * id + float(half) + 0.5f)));
        }
        Put16(y, FloatToHalf(d));
        break;
      }
      case GgmlType::kQ4_1:
      case GgmlType::kQ5_1: {
        const int levels = type == GgmlType::kQ4_1 ? 15 : 31;
        const float d = (hi - lo) / float(levels);
        const float id = d != 0 ? 1.0f / d : 0.0f;
        for (int j = 0; j < 32; ++j) {
          const float v = (x[j] - lo) * id + 0.5f;
          q[j] = levels == 15 ? std::min(15, int(int8_t(v))) : int(uint8_t(v));
        }
        Put16(y, FloatToHalf(d));
        Put16(y + 2, FloatToHalf(lo));
        break;
      }
      case GgmlType::kQ8_0:
      case GgmlType::kQ8_1: {
        const float d = amax / 127.0f;
        const float id = d != 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; ++j) {
          q[j] = int(std::round(x[j] * id));
          sum += q[j];
        }
        Put16(y, FloatToHalf(d));
        if (type == GgmlType::kQ8_1) Put16(y + 2, FloatToHalf(float(sum) * d));
        const int qs_at = type == GgmlType::kQ8_0 ? 2 : 4;
        for (int j = 0; j < 32; ++j) y[qs_at + j] = uint8_t(int8_t(q[j]));
        continue;
      }
      default:
        ADD_FAILURE() << "no reference quantizer for " << TypeName(type);
        return out;
    }
    // 4/5-bit packing: nibbles of j and j+16 share byte j; fifth bit j in qh.
    const bool has_m = type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1;
    const bool five = type == GgmlType::kQ5_0 || type == GgmlType::kQ5_1;
    const int qs_at = (has_m ? 4 : 2) + (five ? 4 : 0);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      y[qs_at + j] = uint8_t((q[j] & 15) | ((q[j + 16] & 15) << 4));
    }
    for (int j = 0; j < 32; ++j) qh |= uint32_t((q[j] >> 4) & 1) << j;
    if (five) {
      for (int k = 0; k < 4; ++k) y[qs_at - 4 + k] = uint8_t(qh >> (8 * k));
    }
  }
  return out;
}

std::vector<float> ActivationsSeen(GgmlType weight_type, const float* x,
                                   int64_t n) {
  GgmlType act;
  switch (weight_type) {
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
      act = GgmlType::kQ8_1;
      break;
    case GgmlType::kQ4_0:
    case GgmlType::kQ5_0:
    case GgmlType::kQ8_0:
      act = GgmlType::kQ8_0;
      break;
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K: {
      const std::vector<uint8_t> q = Quantize(GgmlType::kQ8_K, x, n);
      return Dequantize(GgmlType::kQ8_K, q.data(), n);
    }
    default:
      return std::vector<float>(x, x + n);
  }
  const std::vector<uint8_t> q = QuantizeActivations(act, x, n);
  return Dequantize(act, q.data(), n);
}

std::vector<uint8_t> QuantizeActivations(GgmlType type, const float* x,
                                         int64_t n) {
  const bool q81 = type == GgmlType::kQ8_1;
  const size_t block_bytes = q81 ? 36 : 34;
  std::vector<uint8_t> out(size_t(n / 32) * block_bytes);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    uint8_t* y = out.data() + b * block_bytes;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    int sum = 0;
    const int qs_at = q81 ? 4 : 2;
    for (int j = 0; j < 32; ++j) {
      const int q = int(std::nearbyint(xb[j] * id));  // half to even
      y[qs_at + j] = uint8_t(int8_t(q));
      sum += q;
    }
    const uint16_t dh = FloatToHalf(d);
    y[0] = uint8_t(dh & 0xFF);
    y[1] = uint8_t(dh >> 8);
    if (q81) {
      const uint16_t sh = FloatToHalf(float(sum) * d);
      y[2] = uint8_t(sh & 0xFF);
      y[3] = uint8_t(sh >> 8);
    }
  }
  return out;
}

std::vector<float> RandomFloats(int64_t n, float lo, float hi,
                                std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

std::vector<uint8_t> RandomWeights(GgmlType type, int64_t rows, int64_t cols,
                                   std::mt19937& rng) {
  const size_t row_bytes = RowBytes(type, cols);
  std::vector<uint8_t> w(row_bytes * size_t(rows));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.002f, 0.05f);
  std::uniform_real_distribution<float> offset(-0.3f, 0.1f);
  if (type == GgmlType::kF32 || type == GgmlType::kF16 ||
      type == GgmlType::kBF16) {
    const std::vector<float> f = RandomFloats(rows * cols, -1.0f, 1.0f, rng);
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<uint8_t> q = Quantize(type, f.data() + r * cols, cols);
      std::memcpy(w.data() + size_t(r) * row_bytes, q.data(), row_bytes);
    }
    return w;
  }
  for (uint8_t& b : w) b = uint8_t(byte(rng));
  // Overwrite the f16 scale fields with sane values.
  const TypeTraits& t = Traits(type);
  for (size_t at = 0; at < w.size(); at += size_t(t.block_bytes)) {
    uint8_t* b = w.data() + at;
    switch (type) {
      case GgmlType::kQ4_1:
      case GgmlType::kQ5_1:
        Put16(b + 2, FloatToHalf(offset(rng)));
        [[fallthrough]];
      case GgmlType::kQ4_0:
      case GgmlType::kQ5_0:
      case GgmlType::kQ8_0:
        Put16(b, FloatToHalf(scale(rng)));
        break;
      case GgmlType::kQ4_K:
      case GgmlType::kQ5_K:
        Put16(b, FloatToHalf(scale(rng) / 16));
        Put16(b + 2, FloatToHalf(scale(rng) / 16));
        break;
      case GgmlType::kQ6_K:
        Put16(b + 208, FloatToHalf(scale(rng) / 64));
        break;
      default:
        ADD_FAILURE() << "no random weights for " << TypeName(type);
    }
  }
  return w;
}

MatMulRef MatMul(GgmlType type, const void* w, int64_t rows, int64_t cols,
                 size_t row_bytes, const float* x, int64_t n_tokens) {
  MatMulRef ref;
  ref.out.assign(size_t(rows * n_tokens), 0.0);
  ref.abs_sum.assign(size_t(rows * n_tokens), 0.0);
  const bool affine = type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1;
  for (int64_t t = 0; t < n_tokens; ++t) {
    const std::vector<float> a = ActivationsSeen(type, x + t * cols, cols);
    // Affine weights: ggml takes sum_k m * a_k of a block as m * s, with s the
    // Q8_1 block's f16 field, not the exact sum; so does this reference.
    std::vector<uint8_t> q81;
    if (affine) q81 = QuantizeActivations(GgmlType::kQ8_1, x + t * cols, cols);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* wrow =
          static_cast<const uint8_t*>(w) + size_t(r) * row_bytes;
      const std::vector<float> wr = Dequantize(type, wrow, cols);
      double s = 0, abs = 0;
      for (int64_t k = 0; k < cols; ++k) {
        s += double(wr[k]) * double(a[k]);
        abs += std::fabs(double(wr[k]) * double(a[k]));
      }
      for (int64_t b = 0; affine && b < cols / 32; ++b) {
        const double m =
            HalfToFloat(Get16(wrow + b * Traits(type).block_bytes + 2));
        const double sb = HalfToFloat(Get16(q81.data() + b * 36 + 2));
        double sum_a = 0;
        for (int k = 0; k < 32; ++k) sum_a += a[b * 32 + k];
        s += m * (sb - sum_a);
      }
      ref.out[t * rows + r] = s;
      ref.abs_sum[t * rows + r] = abs;
    }
  }
  return ref;
}

std::vector<double> RmsNorm(const float* x, const float* weight, int64_t n_rows,
                            int64_t dim, float eps) {
  std::vector<double> out(size_t(n_rows * dim));
  for (int64_t r = 0; r < n_rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i)
      ss += double(x[r * dim + i]) * x[r * dim + i];
    const double scale = 1.0 / std::sqrt(ss / double(dim) + double(eps));
    for (int64_t i = 0; i < dim; ++i) {
      out[r * dim + i] = double(x[r * dim + i]) * scale * double(weight[i]);
    }
  }
  return out;
}

std::vector<double> Rope(const float* x, int64_t n_tokens, int32_t n_heads,
                         const int32_t* positions, const RopeParams& p) {
  const int64_t hd = p.head_dim;
  std::vector<double> out(x, x + n_tokens * n_heads * hd);
  const float theta_scale = std::pow(p.freq_base, -2.0f / float(p.rot_dim));
  for (int64_t t = 0; t < n_tokens; ++t) {
    std::vector<float> theta(size_t(p.rot_dim / 2));
    float th = float(positions[t]);
    for (int32_t i = 0; i < p.rot_dim / 2; ++i) {
      theta[i] = p.freq_scale * th;
      th *= theta_scale;
    }
    for (int32_t h = 0; h < n_heads; ++h) {
      const int64_t base = (t * n_heads + h) * hd;
      for (int32_t i = 0; i < p.rot_dim / 2; ++i) {
        const int64_t a = p.mode == RopeMode::kNormal ? 2 * i : i;
        const int64_t b =
            p.mode == RopeMode::kNormal ? 2 * i + 1 : i + p.rot_dim / 2;
        const double c = std::cos(double(theta[i])),
                     s = std::sin(double(theta[i]));
        out[base + a] = double(x[base + a]) * c - double(x[base + b]) * s;
        out[base + b] = double(x[base + a]) * s + double(x[base + b]) * c;
      }
    }
  }
  return out;
}

std::vector<double> SwiGlu(const float* gate, const float* up, int64_t n) {
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    out[i] = g / (1.0 + std::exp(-g)) * double(up[i]);
  }
  return out;
}

std::vector<double> Attention(const KvCacheView& kv, int32_t layer,
                              const TokenPlacement& placement, const float* q,
                              int32_t n_heads, float scale, int32_t window) {
  const int64_t hd = kv.head_dim;
  std::vector<double> out(size_t(placement.n_tokens * n_heads * hd), 0.0);
  for (int32_t t = 0; t < placement.n_tokens; ++t) {
    const int32_t pos = placement.positions[t];
    const int32_t lo = window > 0 ? std::max(0, pos - window + 1) : 0;
    for (int32_t h = 0; h < n_heads; ++h) {
      const int32_t g = h / (n_heads / kv.n_kv_heads);
      // Q and the softmax weights are rounded to f16, as the kernel (and
      // llama.cpp) does; everything else is exact in double.
      std::vector<float> q_half(static_cast<size_t>(hd));
      for (int64_t d = 0; d < hd; ++d) {
        q_half[d] = HalfToFloat(FloatToHalf(q[(int64_t(t) * n_heads + h) * hd + d]));
      }
      auto row = [&](int32_t j, int32_t kvsel) {
        const int32_t block = placement.block_tables[t][j / kv.block_size];
        return kv.base + kv.Offset(block, layer, kvsel, g, j % kv.block_size);
      };
      std::vector<double> s(size_t(pos - lo) + 1);  // s[j - lo]
      double mx = -INFINITY;
      for (int32_t j = lo; j <= pos; ++j) {
        const uint16_t* k = row(j, 0);
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d)
          dot += double(q_half[d]) * HalfToFloat(k[d]);
        s[j - lo] = dot * scale;
        mx = std::max(mx, s[j - lo]);
      }
      double sum = 0;
      for (double& v : s) sum += (v = std::exp(v - mx));
      double* o = out.data() + (int64_t(t) * n_heads + h) * hd;
      for (int32_t j = lo; j <= pos; ++j) {
        const uint16_t* v = row(j, 1);
        const double p = HalfToFloat(FloatToHalf(float(s[j - lo] / sum)));
        for (int64_t d = 0; d < hd; ++d) o[d] += p * HalfToFloat(v[d]);
      }
    }
  }
  return out;
}

Problem MakeProblem(GgmlType type, int64_t rows, int64_t cols,
                    int64_t n_tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  Problem p;
  p.w = RandomWeights(type, rows, cols, rng);
  p.view = {type, p.w.data(), rows, cols, RowBytes(type, cols)};
  p.x = RandomFloats(n_tokens * cols, -2.0f, 2.0f, rng);
  return p;
}

}  // namespace kvsession::kernels::naive
