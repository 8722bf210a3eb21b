// Llama (Llama 2/3, SmolLM2, TinyLlama, Mistral): pre-norm attention with
// GQA and adjacent-pair RoPE, pre-norm SwiGLU FFN.
#include "runtime/arch/families.h"
#include "runtime/arch/llama_layer.h"

namespace kvsession::runtime {
namespace {

class Llama final : public LlamaLayer {
 public:
  const char* name() const override { return "llama"; }
  absl::Status Configure(const GgufFile&, ModelConfig* c) const override {
    c->rope.mode = kernels::RopeMode::kNormal;
    return absl::OkStatus();
  }
};

}  // namespace

const Family& LlamaFamily() {
  static const Llama kFamily;
  return kFamily;
}

}  // namespace kvsession::runtime
