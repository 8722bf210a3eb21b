// Model shapes of the GPU benchmark and their arithmetic: parameter
// counts, the bytes a decode step reads, the FLOPs of a prefill chunk.
#ifndef KVSESSION_BENCH_GPU_MODEL_SHAPES_H_
#define KVSESSION_BENCH_GPU_MODEL_SHAPES_H_

#include "runtime/model_config.h"

namespace kvsession::bench {

// Weight-matrix parameters of the decoder layers.
double LayerMatrixParams(const runtime::ModelConfig& c);
double HeadParams(const runtime::ModelConfig& c);
// Weight bytes one decode step reads on the CUDA backend: every matrix lives
// as F16/BF16 on the device whatever the file stores (PrepareWeight), the
// output head (the embedding table itself when tied) is read whole, the f32
// norm vectors are read too, and of the embedding table only the batch's
// rows are read (not counted).
double DecodeWeightBytes(const runtime::ModelConfig& c);
// FLOPs of one chunk of n tokens at positions start .. start + n - 1 with
// `logit_rows` rows through the head: 2 per matrix parameter and token, and
// attention's 4 * head_dim per (layer, query head, attended position)
// (QK^T and PV), a token at position p attending to p + 1 positions.
double ChunkFlops(const runtime::ModelConfig& c, double start, double n,
                  double logit_rows);
// Llama-3-8B's published configuration (random weights are made for it).
runtime::ModelConfig Llama3_8B();

}  // namespace kvsession::bench

#endif  // KVSESSION_BENCH_GPU_MODEL_SHAPES_H_
