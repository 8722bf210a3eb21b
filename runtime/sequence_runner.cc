#include "runtime/sequence_runner.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"

namespace kvsession::runtime {

absl::StatusOr<std::unique_ptr<SequenceRunner>> SequenceRunner::Create(
    Model* model, const Options& options) {
  const ModelConfig& c = model->config();
  if (options.block_size <= 0 || options.max_chunk <= 0 ||
      options.max_tokens < 0) {
    return absl::InvalidArgumentError("runner: bad options");
  }
  std::unique_ptr<SequenceRunner> r(new SequenceRunner());
  r->model_ = model;
  r->options_ = options;
  r->capacity_ = options.max_tokens > 0
                     ? std::min(options.max_tokens, c.context_length)
                     : c.context_length;
  const int32_t n_blocks =
      (r->capacity_ + options.block_size - 1) / options.block_size;
  r->kv_.num_blocks = n_blocks;
  r->kv_.block_size = options.block_size;
  r->kv_.n_layers = c.n_layers;
  r->kv_.n_kv_heads = c.n_kv_heads;
  r->kv_.head_dim = c.head_dim;
  absl::StatusOr<std::unique_ptr<kernels::Buffer>> arena =
      model->backend()->Allocate(static_cast<size_t>(n_blocks) *
                                 r->kv_.BlockElems() * sizeof(uint16_t));
  if (!arena.ok()) return arena.status();
  r->arena_ = *std::move(arena);
  r->kv_.base = r->arena_->as<uint16_t>();
  r->table_.resize(n_blocks);
  std::iota(r->table_.begin(), r->table_.end(), 0);
  if (options.shuffle_seed != 0) {
    std::mt19937_64 rng(options.shuffle_seed);
    std::shuffle(r->table_.begin(), r->table_.end(), rng);
  }
  return r;
}

absl::Status SequenceRunner::Append(std::span<const int32_t> tokens,
                                    LogitsMode mode,
                                    std::vector<float>* logits) {
  if (tokens_.size() + tokens.size() > static_cast<size_t>(capacity_)) {
    return absl::OutOfRangeError(absl::StrCat(
        "sequence of ", tokens_.size(), " + ", tokens.size(),
        " tokens exceeds the KV capacity of ", capacity_));
  }
  if (logits != nullptr) logits->clear();
  for (size_t off = 0; off < tokens.size();) {
    const size_t n = std::min(tokens.size() - off,
                              static_cast<size_t>(options_.max_chunk));
    const bool last_chunk = off + n == tokens.size();
    SequenceChunk chunk;
    chunk.tokens = tokens.subspan(off, n);
    chunk.start_pos = static_cast<int32_t>(tokens_.size() + off);
    chunk.block_table = table_;
    chunk.logits = mode == LogitsMode::kAll ? LogitsMode::kAll
                   : (mode == LogitsMode::kLast && last_chunk)
                       ? LogitsMode::kLast
                       : LogitsMode::kNone;
    if (absl::Status s = model_->Forward({&chunk, 1}, kv_, &chunk_logits_);
        !s.ok()) {
      return s;
    }
    if (logits != nullptr) {
      logits->insert(logits->end(), chunk_logits_.begin(),
                     chunk_logits_.end());
    }
    off += n;
  }
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  return absl::OkStatus();
}

void SequenceRunner::Truncate(int32_t n) {
  if (n < static_cast<int32_t>(tokens_.size())) tokens_.resize(n);
}

}  // namespace kvsession::runtime
