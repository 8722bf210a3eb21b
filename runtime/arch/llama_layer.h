// The Llama layer, which Qwen2 shares (it only adds biases): families that
// differ from it in loading or configuration derive from it.
#ifndef KVSESSION_RUNTIME_ARCH_LLAMA_LAYER_H_
#define KVSESSION_RUNTIME_ARCH_LLAMA_LAYER_H_

#include "runtime/arch/family.h"

namespace kvsession::runtime {

class LlamaLayer : public Family {
 public:
  void LoadLayer(WeightLoader& l, int32_t layer,
                 LayerWeights* w) const override {
    l.Attention(layer, w);
    l.GatedFfn(layer, w);
  }
  void Layer(LayerGraph& g, const LayerWeights& w) const override {
    g.Norm(w.attn_norm);
    g.QkvProjections(w);
    g.Rope(g.config().rope);
    g.Attention(w.wo);
    g.AddResidual();
    g.Norm(w.ffn_norm);
    g.SwiGluFfn(w);
    g.AddResidual();
  }
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_ARCH_LLAMA_LAYER_H_
