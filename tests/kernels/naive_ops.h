// Plain scalar references for the CPU ops, written from the format and op
// definitions (ggml's), element by element, mostly in double. They share no
// code with kernels/cpu/ beyond the public headers' types.
#ifndef KVSESSION_TESTS_KERNELS_NAIVE_OPS_H_
#define KVSESSION_TESTS_KERNELS_NAIVE_OPS_H_

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/ggml_type.h"
#include "kernels/kv_cache_view.h"

namespace kvsession::kernels::naive {

// IEEE binary16 via ldexp/frexp, round to nearest even.
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float Bf16ToFloat(uint16_t h);
uint16_t FloatToBf16(float f);

// Bytes of one row of n elements.
size_t RowBytes(GgmlType type, int64_t n);

// Element i of a row, decoded from the bytes by the format definition.
std::vector<float> Dequantize(GgmlType type, const void* row, int64_t n);

// Every type a model tensor may have (DequantizeRow and Embed accept all).
inline constexpr GgmlType kWeightTypes[] = {
    GgmlType::kF32,  GgmlType::kF16,  GgmlType::kBF16, GgmlType::kQ4_0,
    GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0,
    GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K};

// Test-name generator for suites parameterized by a GgmlType.
struct TypeParamName {
  template <typename Info>
  std::string operator()(const Info& info) const {
    return std::string(TypeName(info.param));
  }
};

// ggml's reference quantizers (quantize_row_*_ref) of the 32-element types
// and of Q8_K.
std::vector<uint8_t> Quantize(GgmlType type, const float* x, int64_t n);

// Q8_0/Q8_1 the way llama.cpp's x86 kernels quantize activations:
// q = round-half-even(x * 127 / amax).
std::vector<uint8_t> QuantizeActivations(GgmlType type, const float* x,
                                         int64_t n);

// The activations a MatMul with `weight_type` effectively multiplies: x
// quantized to Q8_1 (Q4_1/Q5_1 weights), Q8_0 (Q4_0/Q5_0/Q8_0 weights) or
// Q8_K (Q4_K/Q5_K/Q6_K weights) and decoded again; x itself for the other
// types.
std::vector<float> ActivationsSeen(GgmlType weight_type, const float* x,
                                   int64_t n);

// Random weight bytes: every quant value and sign pattern, scales drawn as
// f16 of reasonable magnitude (so no inf/NaN and no cancellation games).
std::vector<uint8_t> RandomWeights(GgmlType type, int64_t rows, int64_t cols,
                                   std::mt19937& rng);
std::vector<float> RandomFloats(int64_t n, float lo, float hi,
                                std::mt19937& rng);

// dot(decoded weight row, ActivationsSeen) in double; for Q4_1/Q5_1 each
// block's min term uses the Q8_1 f16 sum field as ggml's formula does.
struct MatMulRef {
  std::vector<double> out;      // [t * rows + r]
  std::vector<double> abs_sum;  // sum |w * a|, per output, for tolerances
};
MatMulRef MatMul(GgmlType type, const void* w, int64_t rows, int64_t cols,
                 size_t row_bytes, const float* x, int64_t n_tokens);

std::vector<double> RmsNorm(const float* x, const float* weight, int64_t n_rows,
                            int64_t dim, float eps);

// theta as ggml builds it (f32: pos * theta_scale^i by repeated products,
// times freq_scale); the rotation itself in double.
std::vector<double> Rope(const float* x, int64_t n_tokens, int32_t n_heads,
                         const int32_t* positions, const RopeParams& params);

std::vector<double> SwiGlu(const float* gate, const float* up, int64_t n);

// Softmax attention in double over the f16 cache through the block tables.
// window > 0: a token at p attends to (p - window, p] only.
std::vector<double> Attention(const KvCacheView& kv, int32_t layer,
                              const TokenPlacement& placement, const float* q,
                              int32_t n_heads, float scale,
                              int32_t window = 0);

// A random weight matrix of `type` and n_tokens random activation rows
// (values in [-2, 2)), for the MatMul tests.
struct Problem {
  std::vector<uint8_t> w;
  WeightView view;
  std::vector<float> x;
};
Problem MakeProblem(GgmlType type, int64_t rows, int64_t cols,
                    int64_t n_tokens, uint32_t seed);

}  // namespace kvsession::kernels::naive

#endif  // KVSESSION_TESTS_KERNELS_NAIVE_OPS_H_
