// One sequence with a private KV arena. The CLI, the benchmarks and the model
// tests drive the model through it; the server's engine instead shares one
// arena among all sessions through the session store.
#ifndef KVSESSION_RUNTIME_SEQUENCE_RUNNER_H_
#define KVSESSION_RUNTIME_SEQUENCE_RUNNER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model.h"

namespace kvsession::runtime {

class SequenceRunner {
 public:
  struct Options {
    int32_t max_tokens = 0;  // KV capacity; 0: the model's context length
    int32_t block_size = 16;
    int32_t max_chunk = 512;  // prefill chunk length
    // Non-zero: hand out blocks in a random order so that tests exercise
    // non-contiguous block tables.
    uint64_t shuffle_seed = 0;
  };
  static absl::StatusOr<std::unique_ptr<SequenceRunner>> Create(
      Model* model, const Options& options);

  // Runs `tokens` after the current ones, in chunks of at most max_chunk.
  // kLast: logits of the last token; kAll: of every token.
  absl::Status Append(std::span<const int32_t> tokens, LogitsMode mode,
                      std::vector<float>* logits);
  // Forgets all tokens from position n on (their KV is overwritten later).
  void Truncate(int32_t n);

  const std::vector<int32_t>& tokens() const { return tokens_; }
  int32_t capacity() const { return capacity_; }
  const kernels::KvCacheView& kv() const { return kv_; }
  const std::vector<int32_t>& block_table() const { return table_; }
  Model* model() const { return model_; }

 private:
  SequenceRunner() = default;

  Model* model_ = nullptr;
  Options options_;
  int32_t capacity_ = 0;
  std::unique_ptr<kernels::Buffer> arena_;
  kernels::KvCacheView kv_;
  std::vector<int32_t> table_;
  std::vector<int32_t> tokens_;
  std::vector<float> chunk_logits_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_SEQUENCE_RUNNER_H_
