// Qwen2 / Qwen2.5: the Llama layer with biases on the Q, K and V
// projections and NeoX-style RoPE (rotating x[i] with x[i + rot_dim / 2]).
#include "runtime/arch/families.h"
#include "runtime/arch/llama_layer.h"

namespace kvsession::runtime {
namespace {

class Qwen2 final : public LlamaLayer {
 public:
  const char* name() const override { return "qwen2"; }
  absl::Status Configure(const GgufFile&, ModelConfig* c) const override {
    c->rope.mode = kernels::RopeMode::kNeox;
    return absl::OkStatus();
  }
  void LoadLayer(WeightLoader& l, int32_t layer,
                 LayerWeights* w) const override {
    LlamaLayer::LoadLayer(l, layer, w);
    w->bq = l.Vector(WeightLoader::Name(layer, "attn_q.bias"), w->wq.rows);
    w->bk = l.Vector(WeightLoader::Name(layer, "attn_k.bias"), w->wk.rows);
    w->bv = l.Vector(WeightLoader::Name(layer, "attn_v.bias"), w->wv.rows);
  }
};

}  // namespace

const Family& Qwen2Family() {
  static const Qwen2 kFamily;
  return kFamily;
}

}  // namespace kvsession::runtime
