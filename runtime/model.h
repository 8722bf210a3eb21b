// Llama-family decoder over a kernels::Backend. One Forward() call runs a
// batch that mixes prefill chunks and decode tokens of several sequences;
// K/V go into the paged arena through each sequence's block table.
//
// Batch invariance (DESIGN.md invariant 5): every op the model calls computes
// each token's values independently of the rest of the batch, so a token's
// K/V and logits are bitwise the same in a prefill chunk of any length, in a
// decode step, or beside any other sequences.
#ifndef KVSESSION_RUNTIME_MODEL_H_
#define KVSESSION_RUNTIME_MODEL_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model_config.h"

namespace kvsession::runtime {

class GgufFile;

enum class LogitsMode { kNone, kLast, kAll };

// A run of consecutive tokens of one sequence: positions start_pos ..
// start_pos + tokens.size() - 1. block_table must cover all of them.
struct SequenceChunk {
  std::span<const int32_t> tokens;
  int32_t start_pos = 0;
  std::span<const int32_t> block_table;
  LogitsMode logits = LogitsMode::kLast;
};

class Model {
 public:
  // The file's mapping must outlive the model (weights are used in place).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const GgufFile& file,
                                                     kernels::Backend* backend);

  const ModelConfig& config() const { return config_; }
  kernels::Backend* backend() const { return backend_; }
  // Bytes of weights (as stored).
  int64_t weight_bytes() const { return weight_bytes_; }

  // Runs one step. `logits` receives vocab_size floats per requested row, in
  // chunk order (kLast: one row, kAll: one per token). Fails with
  // INVALID_ARGUMENT (nothing written) on out-of-range tokens, positions
  // beyond the context or the block table, or a KV view of another shape.
  absl::Status Forward(std::span<const SequenceChunk> batch,
                       const kernels::KvCacheView& kv,
                       std::vector<float>* logits);

 private:
  struct Layer {
    kernels::WeightView attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up,
        w_down;
  };

  Model(const ModelConfig& config, kernels::Backend* backend)
      : config_(config), backend_(backend) {}
  absl::Status LoadWeights(const GgufFile& file);
  absl::StatusOr<kernels::WeightView> Weight(const GgufFile& file,
                                             const std::string& name,
                                             int64_t rows, int64_t cols);
  absl::StatusOr<kernels::WeightView> NormWeight(const GgufFile& file,
                                                 const std::string& name);
  absl::Status Validate(std::span<const SequenceChunk> batch,
                        const kernels::KvCacheView& kv) const;
  float* Scratch(int index, int64_t n_floats);

  ModelConfig config_;
  kernels::Backend* backend_;
  kernels::WeightView token_embd_, output_norm_, output_;
  std::vector<Layer> layers_;
  int64_t weight_bytes_ = 0;
  // Norm weights converted to f32 live in backend buffers.
  std::vector<std::unique_ptr<kernels::Buffer>> owned_;
  std::vector<std::unique_ptr<kernels::Buffer>> scratch_;
  // Per-token placement, rebuilt each step.
  std::vector<int32_t> positions_;
  std::vector<const int32_t*> tables_;
  std::vector<int32_t> tokens_;
  std::vector<int32_t> logit_rows_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_MODEL_H_
