// Gemma 3 (text): the embedding scaled by sqrt(d_model); RMSNorm before
// and after attention and the FFN (the GGUF stores Gemma's (1 + w) norm
// weights already added up, so they are plain RMSNorm weights); per-head
// q/k RMSNorm; NeoX RoPE; a GeGLU (tanh GELU) FFN; head_dim from
// attention.key_length; a tied output head. Five sliding-window layers
// (RoPE base 10000) alternate with one global layer (the file's base), as
// llama.cpp defines Gemma 3.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/arch/families.h"
#include "runtime/gguf.h"

namespace kvsession::runtime {
namespace {

// llama.cpp's Gemma 3 constants (not in the GGUF).
constexpr int32_t kSwaPeriod = 6;
constexpr float kLocalRopeBase = 10000.0f;
constexpr int32_t kLayers27B = 62;

class Gemma3 final : public Family {
 public:
  const char* name() const override { return "gemma3"; }
  absl::Status Configure(const GgufFile& file, ModelConfig* c) const override {
    const std::string key = "gemma3.attention.sliding_window";
    absl::StatusOr<uint64_t> window = file.GetUint(key);
    if (!window.ok() || *window < 1 || *window > (1u << 24)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model: ", key, " missing or out of range"));
    }
    c->sliding_window = static_cast<int32_t>(*window);
    c->swa_period = kSwaPeriod;
    c->rope.mode = kernels::RopeMode::kNeox;
    c->rope_local = c->rope;
    c->rope_local.freq_base = kLocalRopeBase;
    c->rope_local.freq_scale = 1.0f;  // linear scaling is the global layers'
    c->embed_scale = std::sqrt(static_cast<float>(c->d_model));
    // 27B scales queries by its query_pre_attn_scalar, d_model / heads.
    if (c->n_layers == kLayers27B) {
      c->attn_scale = 1.0f / std::sqrt(static_cast<float>(c->d_model /
                                                          c->n_heads));
    }
    return absl::OkStatus();
  }
  void LoadLayer(WeightLoader& l, int32_t layer,
                 LayerWeights* w) const override {
    const int64_t d = l.config().d_model;
    const int64_t head_dim = l.config().head_dim;
    auto name = [&](const char* t) { return WeightLoader::Name(layer, t); };
    l.Attention(layer, w);
    w->q_norm = l.Vector(name("attn_q_norm.weight"), head_dim);
    w->k_norm = l.Vector(name("attn_k_norm.weight"), head_dim);
    w->attn_post_norm = l.Vector(name("post_attention_norm.weight"), d);
    l.GatedFfn(layer, w);
    w->ffn_post_norm = l.Vector(name("post_ffw_norm.weight"), d);
  }
  void Layer(LayerGraph& g, const LayerWeights& w) const override {
    const ModelConfig& c = g.config();
    g.Norm(w.attn_norm);
    g.QkvProjections(w);
    g.QkNorm(w);
    g.Rope(c.IsLocalLayer(g.layer()) ? c.rope_local : c.rope);
    g.Attention(w.wo);
    g.PostNorm(w.attn_post_norm);
    g.AddResidual();
    g.Norm(w.ffn_norm);
    g.GeGluFfn(w);
    g.PostNorm(w.ffn_post_norm);
    g.AddResidual();
  }
};

}  // namespace

const Family& Gemma3Family() {
  static const Gemma3 kFamily;
  return kFamily;
}

}  // namespace kvsession::runtime
