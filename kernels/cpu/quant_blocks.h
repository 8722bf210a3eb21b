// Block layouts of the GGUF quantized types (identical bytes to ggml's
// block_* structs) and the per-block helpers that quantize.cc and matmul.cc
// share, so activations MatMul quantizes internally are bit-identical to what
// QuantizeRow writes.
#ifndef KVSESSION_KERNELS_CPU_QUANT_BLOCKS_H_
#define KVSESSION_KERNELS_CPU_QUANT_BLOCKS_H_

#include <cstdint>

namespace kvsession::kernels {

inline constexpr int kQk = 32;    // elements of a Q4_0..Q8_1 block
inline constexpr int kQkK = 256;  // elements of a K-quant super-block

// f16 fields are raw IEEE binary16 bits.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQk / 2];  // element j: low nibble of qs[j], j+16: high nibble
};
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQk / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // bit j: fifth bit of element j (little-endian uint32)
  uint8_t qs[kQk / 2];
};
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQk / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQk];
};
struct BlockQ8_1 {
  uint16_t d;
  uint16_t s;  // d * sum(qs), rounded to f16
  int8_t qs[kQk];
};
struct BlockQ4K {
  uint16_t d;     // scale of the 6-bit sub-block scales
  uint16_t dmin;  // scale of the 6-bit sub-block mins
  uint8_t scales[12];
  uint8_t qs[kQkK / 2];
};
struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];    // packed like Q4_K's
  uint8_t qh[kQkK / 8];  // bit 2c (2c + 1) of qh[l]: fifth bit of element
                         // 64c + l (64c + 32 + l)
  uint8_t qs[kQkK / 2];
};
struct BlockQ6K {
  uint8_t ql[kQkK / 2];  // low 4 bits
  uint8_t qh[kQkK / 4];  // high 2 bits
  int8_t scales[kQkK / 16];
  uint16_t d;
};
// The activations K-quant weights meet in MatMul (ggml's block_q8_K).
struct BlockQ8K {
  float d;
  int8_t qs[kQkK];
  int16_t bsums[kQkK / 16];  // sum of each 16 consecutive qs
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ4K) == 144);
static_assert(sizeof(BlockQ5K) == 176);
static_assert(sizeof(BlockQ6K) == 210);
static_assert(sizeof(BlockQ8K) == 292);

// Sub-block j (0..7) scale and min of a Q4_K (or Q5_K) super-block: 6 bits
// each, packed in 12 bytes the way ggml packs them.
inline void Q4KScaleMin(const uint8_t* s, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Inverse of Q4KScaleMin: stores 6-bit sc and m of sub-block j (bytes start
// zeroed).
inline void Q4KPackScaleMin(uint8_t* s, int j, uint8_t sc, uint8_t m) {
  if (j < 4) {
    s[j] |= sc & 63;
    s[j + 4] |= m & 63;
  } else {
    s[j + 4] = static_cast<uint8_t>((sc & 0x0F) | ((m & 0x0F) << 4));
    s[j - 4] |= static_cast<uint8_t>((sc >> 4) << 6);
    s[j] |= static_cast<uint8_t>((m >> 4) << 6);
  }
}

// How a Q8 block rounds. kReference is ggml's reference quantizer (model
// files): q = roundf(x * (1 / d)), halves away from zero. kActivation is how
// llama.cpp's x86 kernels quantize activations at run time: q = round to
// nearest even of x * (127 / amax). MatMul uses kActivation in prefill and
// decode alike, which keeps its logits closest to llama.cpp's.
enum class Q8Rounding { kReference, kActivation };

// Quantizes one 32-element block to int8 with d = amax / 127. Writes the
// f16 bits of d to *d_bits and the f16 bits of d * sum(q) to *s_bits (s_bits
// may be null for Q8_0). quantize.cc.
void QuantizeBlockQ8(const float* x, int8_t* qs, uint16_t* d_bits,
                     uint16_t* s_bits, Q8Rounding rounding);

// Quantizes 256 elements to Q8_K as ggml's quantize_row_q8_K_ref does (the
// routine llama.cpp also uses for activations at run time): d = max / -128
// with max the element of largest magnitude, q = round half to even of x / d
// (at most 127). quantize.cc; QuantizeRow and MatMul share it.
void QuantizeBlockQ8K(const float* x, BlockQ8K* y);

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_CPU_QUANT_BLOCKS_H_
