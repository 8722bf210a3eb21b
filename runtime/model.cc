#include "runtime/model.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "runtime/arch/families.h"
#include "runtime/gguf.h"

namespace kvsession::runtime {

using kernels::WeightView;

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const GgufFile& file,
                                                   kernels::Backend* backend) {
  absl::StatusOr<ModelConfig> config = ModelConfig::FromGguf(file);
  if (!config.ok()) return config.status();
  std::unique_ptr<Model> model(new Model(*config, backend));
  if (absl::Status s = model->LoadWeights(file); !s.ok()) return s;
  return model;
}

absl::Status Model::LoadWeights(const GgufFile& file) {
  const ModelConfig& c = config_;
  family_ = FindFamily(c.architecture);
  if (family_ == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "model: architecture '", c.architecture,
        "' is not supported (supported: ", SupportedFamilies(), ")"));
  }
  WeightLoader l(file, backend_, c, &owned_, &weight_bytes_);
  token_embd_ = l.Matrix("token_embd.weight", c.vocab_size, c.d_model);
  output_norm_ = l.Vector("output_norm.weight", c.d_model);
  // Without output.weight the head is the embedding (tied).
  output_ = l.Has("output.weight")
                ? l.Matrix("output.weight", c.vocab_size, c.d_model)
                : token_embd_;
  layers_.resize(c.n_layers);
  for (int32_t i = 0; i < c.n_layers && l.status().ok(); ++i) {
    family_->LoadLayer(l, i, &layers_[i]);
  }
  return l.status();
}

absl::Status Model::Validate(std::span<const SequenceChunk> batch,
                             const kernels::KvCacheView& kv) const {
  const ModelConfig& c = config_;
  if (kv.n_layers != c.n_layers || kv.n_kv_heads != c.n_kv_heads ||
      kv.head_dim != c.head_dim || kv.block_size <= 0) {
    return absl::InvalidArgumentError("model: KV view shape mismatch");
  }
  if (absl::Status s = backend_->CheckBlockSize(kv.block_size); !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    const SequenceChunk& s = batch[i];
    const int64_t end = int64_t{s.start_pos} + s.tokens.size();
    if (s.tokens.empty() || s.start_pos < 0 || end > c.context_length) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model: chunk ", i, " covers positions [", s.start_pos, ", ", end,
          "), context is ", c.context_length));
    }
    if (end > int64_t{kv.block_size} *
                  static_cast<int64_t>(s.block_table.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model: chunk ", i, " ends at position ", end, " but its ",
          s.block_table.size(), " blocks hold ",
          int64_t{kv.block_size} * s.block_table.size()));
    }
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= kv.num_blocks) {
        return absl::InvalidArgumentError(
            absl::StrCat("model: block id ", b, " outside the arena"));
      }
    }
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model: token id ", t, " outside vocab of ", c.vocab_size));
      }
    }
  }
  return absl::OkStatus();
}

float* Model::Scratch(int index, int64_t n_floats) {
  if (scratch_.size() <= static_cast<size_t>(index)) {
    scratch_.resize(index + 1);
  }
  std::unique_ptr<kernels::Buffer>& b = scratch_[index];
  const size_t bytes = static_cast<size_t>(n_floats) * sizeof(float);
  if (b == nullptr || b->size() < bytes) {
    absl::StatusOr<std::unique_ptr<kernels::Buffer>> nb =
        backend_->Allocate(bytes);
    KVS_CHECK(nb.ok()) << nb.status();
    b = *std::move(nb);
  }
  return b->as<float>();
}

int32_t Model::CountLogitRows(std::span<const SequenceChunk> batch) {
  int32_t r = 0;
  for (const SequenceChunk& s : batch) {
    if (s.logits == LogitsMode::kAll) r += static_cast<int32_t>(s.tokens.size());
    if (s.logits == LogitsMode::kLast) ++r;
  }
  return r;
}

absl::StatusOr<float*> Model::Run(std::span<const SequenceChunk> batch,
                                  const kernels::KvCacheView& kv) {
  if (absl::Status s = Validate(batch, kv); !s.ok()) return s;
  const ModelConfig& c = config_;
  kernels::Backend& be = *backend_;

  tokens_.clear();
  positions_.clear();
  tables_.clear();
  logit_rows_.clear();
  for (const SequenceChunk& s : batch) {
    const int32_t n = static_cast<int32_t>(s.tokens.size());
    for (int32_t i = 0; i < n; ++i) {
      if (s.logits == LogitsMode::kAll ||
          (s.logits == LogitsMode::kLast && i == n - 1)) {
        logit_rows_.push_back(static_cast<int32_t>(tokens_.size()));
      }
      tokens_.push_back(s.tokens[i]);
      positions_.push_back(s.start_pos + i);
      tables_.push_back(s.block_table.data());
    }
  }
  const int64_t T = static_cast<int64_t>(tokens_.size());
  const int64_t d = c.d_model;
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.n_kv_heads} * c.head_dim;

  // Activations hold whole rows of the backend's GEMM tiles (MatMul). Every
  // buffer the step uses exists before it starts (a backend may record the
  // step and replay it).
  const int64_t pad = be.RowPadding();
  const int64_t Tp = (T + pad - 1) / pad * pad;
  StepBuffers buf;
  buf.x = Scratch(0, Tp * d);
  buf.cur = Scratch(1, Tp * std::max(d, q_dim));
  buf.q = Scratch(2, Tp * q_dim);
  buf.k = Scratch(3, Tp * kv_dim);
  buf.v = Scratch(4, Tp * kv_dim);
  buf.att = Scratch(5, Tp * q_dim);
  buf.gate = Scratch(6, Tp * c.ffn_dim);
  buf.up = Scratch(7, Tp * c.ffn_dim);
  const int64_t R = static_cast<int64_t>(logit_rows_.size());
  const int64_t Rp = (R + pad - 1) / pad * pad;
  float* rows = R > 0 ? Scratch(8, Rp * d) : nullptr;
  float* out = R > 0 ? Scratch(9, Rp * c.vocab_size) : nullptr;

  kernels::StepInputs step;
  step.tokens = tokens_.data();
  step.placement.n_tokens = static_cast<int32_t>(T);
  step.placement.positions = positions_.data();
  step.placement.block_tables = tables_.data();
  step.block_size = kv.block_size;
  step.logit_rows = logit_rows_.data();
  step.n_logit_rows = static_cast<int32_t>(R);
  step.kv_base = kv.base;
  be.RunStep(step, [&](const kernels::StepViews& views) {
    be.Embed(token_embd_, views.tokens, T, buf.x);
    if (c.embed_scale != 1.0f) be.Scale(buf.x, c.embed_scale, T * d, buf.x);
    for (int32_t li = 0; li < c.n_layers; ++li) {
      LayerGraph g(be, c, views, kv, buf, li);
      family_->Layer(g, layers_[li]);
    }
    if (R == 0) return;
    // Only the rows that need logits go through the head.
    be.GatherRows(buf.x, views.logit_rows, R, d, rows);
    be.RmsNorm(rows, static_cast<const float*>(output_norm_.data), R, d,
               c.rms_eps, buf.cur);
    be.MatMul(output_, buf.cur, R, out);
  });
  return out;
}

absl::Status Model::Forward(std::span<const SequenceChunk> batch,
                            const kernels::KvCacheView& kv,
                            std::vector<float>* logits) {
  absl::StatusOr<float*> out = Run(batch, kv);
  if (!out.ok()) return out.status();
  if (logits != nullptr) logits->clear();
  if (*out == nullptr || logits == nullptr) {
    backend_->Synchronize();
    return absl::OkStatus();
  }
  logits->resize(logit_rows_.size() * static_cast<size_t>(config_.vocab_size));
  backend_->CopyToHost(*out, logits->data(), logits->size() * sizeof(float));
  backend_->Synchronize();
  return absl::OkStatus();
}

absl::Status Model::ForwardSampled(std::span<const SequenceChunk> batch,
                                   const kernels::KvCacheView& kv,
                                   std::span<const RowSampling> rows,
                                   std::vector<int32_t>* tokens,
                                   std::vector<float>* host_logits) {
  if (static_cast<int32_t>(rows.size()) != CountLogitRows(batch)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model: ", rows.size(), " sampling rows for ", CountLogitRows(batch),
        " logits rows"));
  }
  absl::StatusOr<float*> out = Run(batch, kv);
  if (!out.ok()) return out.status();
  const int32_t R = static_cast<int32_t>(rows.size());
  const int64_t vocab = config_.vocab_size;
  tokens->assign(R, -1);
  host_logits->clear();
  if (R == 0) {
    backend_->Synchronize();
    return absl::OkStatus();
  }
  // Device rows are sampled in one launch; host rows (rare: sampling
  // options the device op lacks) bring their logits over one by one.
  sample_rows_.clear();
  device_rows_.clear();
  for (int32_t r = 0; r < R; ++r) {
    if (!rows[r].on_device) {
      const size_t off = host_logits->size();
      host_logits->resize(off + vocab);
      backend_->CopyToHost(*out + r * vocab, host_logits->data() + off,
                           vocab * sizeof(float));
      continue;
    }
    sample_rows_.push_back(rows[r].row);
    device_rows_.push_back(r);
  }
  if (!device_rows_.empty()) {
    // Device rows are consecutive whenever all rows are device rows (the
    // common case); otherwise they are sampled one at a time.
    if (device_rows_.size() == static_cast<size_t>(R)) {
      backend_->SampleTokens(*out, R, static_cast<int32_t>(vocab),
                             sample_rows_.data(), tokens->data());
    } else {
      for (size_t i = 0; i < device_rows_.size(); ++i) {
        const int32_t r = device_rows_[i];
        backend_->SampleTokens(*out + r * vocab, 1, static_cast<int32_t>(vocab),
                               &sample_rows_[i], tokens->data() + r);
      }
    }
  }
  backend_->Synchronize();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Model>> Model::CreateRandom(
    const ModelConfig& config, kernels::Backend* backend,
    const RandomWeights& weights) {
  if (config.n_layers <= 0 || config.d_model <= 0 || config.n_heads <= 0 ||
      config.n_kv_heads <= 0 || config.n_heads % config.n_kv_heads != 0 ||
      config.head_dim <= 0 || config.ffn_dim <= 0 || config.vocab_size <= 0) {
    return absl::InvalidArgumentError("model: invalid random configuration");
  }
  std::unique_ptr<Model> model(new Model(config, backend));
  model->family_ = &LlamaFamily();
  if (absl::Status s = model->InitRandom(weights); !s.ok()) return s;
  return model;
}

absl::Status Model::InitRandom(const RandomWeights& weights) {
  const ModelConfig& c = config_;
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  uint64_t seed = weights.seed;
  const size_t elem = kernels::Traits(weights.type).block_bytes;
  // Weights of one group (MatMuls order) share one allocation, back to
  // back, so that a backend may run them as one GEMM. Seeds go in order.
  struct Part {
    WeightView* dst;
    int64_t rows;
  };
  auto make_group = [&](std::initializer_list<Part> parts, int64_t cols,
                        float scale) -> absl::Status {
    size_t bytes = 0;
    for (const Part& p : parts) {
      bytes += static_cast<size_t>(p.rows * cols) * elem;
    }
    absl::StatusOr<std::unique_ptr<kernels::Buffer>> buf =
        backend_->Allocate(bytes);
    if (!buf.ok()) return buf.status();
    std::vector<WeightView> group;
    auto* data = static_cast<uint8_t*>((*buf)->data());
    for (const Part& p : parts) {
      backend_->FillRandom(weights.type, data, p.rows * cols,
                           seed++ * 0x9E3779B97F4A7C15ull, scale);
      WeightView w;
      w.type = weights.type;
      w.data = data;
      w.rows = p.rows;
      w.cols = cols;
      w.row_bytes = static_cast<size_t>(cols) * elem;
      group.push_back(w);
      data += static_cast<size_t>(p.rows * cols) * elem;
    }
    if (absl::Status s = backend_->RegisterWeights(group); !s.ok()) return s;
    weight_bytes_ += static_cast<int64_t>(bytes);
    owned_.push_back(*std::move(buf));
    size_t i = 0;
    for (const Part& p : parts) *p.dst = group[i++];
    return absl::OkStatus();
  };
  auto make = [&](WeightView* dst, int64_t rows, int64_t cols,
                  float scale) -> absl::Status {
    return make_group({{dst, rows}}, cols, scale);
  };
  auto ones = [&](WeightView* dst) -> absl::Status {
    std::vector<float> host(c.d_model, 1.0f);
    absl::StatusOr<std::unique_ptr<kernels::Buffer>> buf =
        backend_->Allocate(host.size() * sizeof(float));
    if (!buf.ok()) return buf.status();
    backend_->CopyFromHost(host.data(), (*buf)->data(),
                           host.size() * sizeof(float));
    dst->type = kernels::GgmlType::kF32;
    dst->data = (*buf)->data();
    dst->rows = 1;
    dst->cols = c.d_model;
    dst->row_bytes = host.size() * sizeof(float);
    owned_.push_back(*std::move(buf));
    return absl::OkStatus();
  };
  auto fan = [](int64_t fan_in) {
    return std::sqrt(3.0f / static_cast<float>(fan_in));
  };
  if (absl::Status s = make(&token_embd_, c.vocab_size, c.d_model, 1.0f);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = ones(&output_norm_); !s.ok()) return s;
  if (absl::Status s = make(&output_, c.vocab_size, c.d_model, fan(c.d_model));
      !s.ok()) {
    return s;
  }
  layers_.resize(c.n_layers);
  for (LayerWeights& l : layers_) {
    if (absl::Status s = make_group(
            {{&l.wq, q_dim}, {&l.wk, kv_dim}, {&l.wv, kv_dim}}, c.d_model,
            fan(c.d_model));
        !s.ok()) {
      return s;
    }
    const struct {
      WeightView* dst;
      int64_t rows, cols;
    } items[] = {
        {&l.wo, c.d_model, q_dim},
        {&l.gate, c.ffn_dim, c.d_model}, {&l.up, c.ffn_dim, c.d_model},
        {&l.down, c.d_model, c.ffn_dim},
    };
    for (const auto& it : items) {
      if (absl::Status s = make(it.dst, it.rows, it.cols, fan(it.cols));
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = ones(&l.attn_norm); !s.ok()) return s;
    if (absl::Status s = ones(&l.ffn_norm); !s.ok()) return s;
  }
  backend_->Synchronize();
  return absl::OkStatus();
}

}  // namespace kvsession::runtime
