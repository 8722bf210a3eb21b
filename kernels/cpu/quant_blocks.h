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
struct BlockQ6K {
  uint8_t ql[kQkK / 2];  // low 4 bits
  uint8_t qh[kQkK / 4];  // high 2 bits
  int8_t scales[kQkK / 16];
  uint16_t d;
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ4K) == 144);
static_assert(sizeof(BlockQ6K) == 210);

// Sub-block j (0..7) scale and min of a Q4_K super-block: 6 bits each, packed
// in 12 bytes the way ggml packs them.
inline void Q4KScaleMin(const uint8_t* s, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
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

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_CPU_QUANT_BLOCKS_H_
