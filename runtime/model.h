// A decoder of any registered family (runtime/arch/) over a kernels::Backend. One Forward() call runs a
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
#include "runtime/arch/family.h"
#include "runtime/model_config.h"

namespace kvsession::runtime {

class GgufFile;

enum class LogitsMode { kNone, kLast, kAll };

// A run of consecutive tokens of one sequence: positions start_pos ..
// start_pos + tokens.size() - 1. block_table must cover all of them.
// How one logits row of ForwardSampled is turned into a token.
struct RowSampling {
  // true: the backend samples the row where the logits are (only the token
  // id crosses to the host); false: the row's logits come to the host.
  bool on_device = false;
  kernels::SampleRow row;
};

// Weights of a random model (benchmarks of model shapes we have no file
// for): FillRandom values, uniform in +-sqrt(3 / fan_in).
struct RandomWeights {
  uint64_t seed = 1;
  kernels::GgmlType type = kernels::GgmlType::kBF16;
};

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

  // A model of `config`'s shape with random weights made in backend memory
  // (the llama family's layer, whatever config.architecture says).
  static absl::StatusOr<std::unique_ptr<Model>> CreateRandom(
      const ModelConfig& config, kernels::Backend* backend,
      const RandomWeights& weights);

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
  // Forward with sampling: row r of the logits (same order as Forward) is
  // sampled by the backend when rows[r].on_device (tokens[r] = its id), or
  // else copied to host_logits (vocab floats per such row, in row order;
  // tokens[r] = -1). rows.size() must equal the number of logits rows.
  absl::Status ForwardSampled(std::span<const SequenceChunk> batch,
                              const kernels::KvCacheView& kv,
                              std::span<const RowSampling> rows,
                              std::vector<int32_t>* tokens,
                              std::vector<float>* host_logits);
  // Logits rows a batch asks for.
  static int32_t CountLogitRows(std::span<const SequenceChunk> batch);

 private:
  Model(const ModelConfig& config, kernels::Backend* backend)
      : config_(config), backend_(backend) {}
  absl::Status LoadWeights(const GgufFile& file);
  absl::Status Validate(std::span<const SequenceChunk> batch,
                        const kernels::KvCacheView& kv) const;
  float* Scratch(int index, int64_t n_floats);
  // Runs the layers and the head; returns the logits rows in backend memory
  // (null when the batch asks for none).
  absl::StatusOr<float*> Run(std::span<const SequenceChunk> batch,
                             const kernels::KvCacheView& kv);
  absl::Status InitRandom(const RandomWeights& weights);

  ModelConfig config_;
  kernels::Backend* backend_;
  const Family* family_ = nullptr;
  kernels::WeightView token_embd_, output_norm_, output_;
  std::vector<LayerWeights> layers_;
  int64_t weight_bytes_ = 0;
  // Norm weights converted to f32 live in backend buffers.
  std::vector<std::unique_ptr<kernels::Buffer>> owned_;
  std::vector<std::unique_ptr<kernels::Buffer>> scratch_;
  // Per-token placement, rebuilt each step.
  std::vector<int32_t> positions_;
  std::vector<const int32_t*> tables_;
  std::vector<int32_t> tokens_;
  std::vector<int32_t> logit_rows_;
  std::vector<kernels::SampleRow> sample_rows_;
  std::vector<int32_t> device_rows_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_MODEL_H_
