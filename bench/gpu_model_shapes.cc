#include "bench/gpu_model_shapes.h"

#include "kernels/cpu/ops.h"

namespace kvsession::bench {

double LayerMatrixParams(const runtime::ModelConfig& c) {
  const double d = c.d_model;
  const double q = static_cast<double>(c.n_heads) * c.head_dim;
  const double kv = static_cast<double>(c.n_kv_heads) * c.head_dim;
  // wq + wk + wv + wo + gate + up + down
  return c.n_layers * (d * q + 2 * d * kv + q * d + 3 * d * c.ffn_dim);
}

double HeadParams(const runtime::ModelConfig& c) {
  return static_cast<double>(c.vocab_size) * c.d_model;
}

double DecodeWeightBytes(const runtime::ModelConfig& c) {
  return 2.0 * (LayerMatrixParams(c) + HeadParams(c)) +
         4.0 * c.d_model * (2.0 * c.n_layers + 1);
}

double ChunkFlops(const runtime::ModelConfig& c, double start, double n,
                  double logit_rows) {
  const double attended = n * start + n * (n + 1) / 2;
  return 2 * LayerMatrixParams(c) * n + 2 * HeadParams(c) * logit_rows +
         4.0 * c.n_layers * c.n_heads * c.head_dim * attended;
}

runtime::ModelConfig Llama3_8B() {
  runtime::ModelConfig c;
  c.name = "Llama-3-8B shape, random bf16 weights";
  c.n_layers = 32;
  c.d_model = 4096;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.ffn_dim = 14336;
  c.vocab_size = 128256;
  c.context_length = 32768;
  c.rms_eps = 1e-5f;
  c.rope.head_dim = 128;
  c.rope.rot_dim = 128;
  c.rope.freq_base = 500000.0f;
  c.rope.mode = kernels::RopeMode::kNormal;
  return c;
}

}  // namespace kvsession::bench
