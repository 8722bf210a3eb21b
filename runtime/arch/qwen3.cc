// Qwen3 (dense): no biases; q and k are RMS-normalised per head before
// NeoX RoPE; head_dim comes from attention.key_length (128 on every Qwen3,
// which is not d_model / heads on most of them).
#include "runtime/arch/families.h"
#include "runtime/arch/llama_layer.h"

namespace kvsession::runtime {
namespace {

class Qwen3 final : public Family {
 public:
  const char* name() const override { return "qwen3"; }
  absl::Status Configure(const GgufFile&, ModelConfig* c) const override {
    c->rope.mode = kernels::RopeMode::kNeox;
    return absl::OkStatus();
  }
  void LoadLayer(WeightLoader& l, int32_t layer,
                 LayerWeights* w) const override {
    const int64_t head_dim = l.config().head_dim;
    l.Attention(layer, w);
    w->q_norm = l.Vector(WeightLoader::Name(layer, "attn_q_norm.weight"),
                         head_dim);
    w->k_norm = l.Vector(WeightLoader::Name(layer, "attn_k_norm.weight"),
                         head_dim);
    l.GatedFfn(layer, w);
  }
  void Layer(LayerGraph& g, const LayerWeights& w) const override {
    g.Norm(w.attn_norm);
    g.QkvProjections(w);
    g.QkNorm(w);
    g.Rope(g.config().rope);
    g.Attention(w.wo);
    g.AddResidual();
    g.Norm(w.ffn_norm);
    g.SwiGluFfn(w);
    g.AddResidual();
  }
};

}  // namespace

const Family& Qwen3Family() {
  static const Qwen3 kFamily;
  return kFamily;
}

}  // namespace kvsession::runtime
