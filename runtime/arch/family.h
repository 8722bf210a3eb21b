// A model family: one file per architecture (runtime/arch/<name>.cc) reads
// its hyper-parameters and weights from the GGUF and describes its layer as
// a sequence of primitive backend ops through LayerGraph. The registry maps
// general.architecture to the family.
//
// A family file says only what differs from the others; the common pieces
// (a projection with optional bias, attention over the paged KV, a gated
// FFN) are LayerGraph's, as llama.cpp's build_attn and build_ffn are.
#ifndef KVSESSION_RUNTIME_ARCH_FAMILY_H_
#define KVSESSION_RUNTIME_ARCH_FAMILY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "runtime/model_config.h"

namespace kvsession::runtime {

class GgufFile;

// Every weight a layer of some family has; a family fills the ones it uses
// (a WeightView with null data is absent). Vectors (norms, biases) are f32
// in backend memory.
struct LayerWeights {
  kernels::WeightView attn_norm, wq, wk, wv, wo;
  kernels::WeightView bq, bk, bv;        // projection biases (Qwen2)
  kernels::WeightView q_norm, k_norm;    // per-head norms (Qwen3)
  kernels::WeightView ffn_norm, gate, up, down;
  // Norms of the attention and FFN outputs before the residual (Gemma).
  kernels::WeightView attn_post_norm, ffn_post_norm;
};

// Reads weights for a family; the first error sticks (status()), so that a
// family's loading code is a plain list of its tensors.
class WeightLoader {
 public:
  WeightLoader(const GgufFile& file, kernels::Backend* backend,
               const ModelConfig& config,
               std::vector<std::unique_ptr<kernels::Buffer>>* owned,
               int64_t* weight_bytes)
      : file_(file),
        backend_(backend),
        config_(config),
        owned_(owned),
        weight_bytes_(weight_bytes) {}

  const ModelConfig& config() const { return config_; }
  const absl::Status& status() const { return status_; }
  bool Has(const std::string& name) const;

  // A [rows][cols] matrix made usable by the backend's MatMul.
  kernels::WeightView Matrix(const std::string& name, int64_t rows,
                             int64_t cols);
  // Matrices of one input width that a backend may run as one GEMM (Q, K
  // and V; gate and up).
  struct Item {
    kernels::WeightView* dst;
    std::string name;
    int64_t rows;
  };
  void Group(std::initializer_list<Item> items, int64_t cols);
  // An [n] vector as f32 in backend memory (norm weights, biases).
  kernels::WeightView Vector(const std::string& name, int64_t n);

  // The common blocks, as llama.cpp names their tensors (blk.N.*).
  // attn_norm, attn_q/k/v (one group), attn_output.
  void Attention(int32_t layer, LayerWeights* w);
  // ffn_norm, ffn_gate and ffn_up (one group), ffn_down: a gated FFN
  // (SwiGLU or GeGLU, as the family's layer applies it).
  void GatedFfn(int32_t layer, LayerWeights* w);

  static std::string Name(int32_t layer, std::string_view tensor);

 private:
  // The tensor as a [rows][cols] weight in the file's memory.
  kernels::WeightView Host(const std::string& name, int64_t rows,
                           int64_t cols);
  bool Fail(absl::Status s);

  const GgufFile& file_;
  kernels::Backend* backend_;
  const ModelConfig& config_;
  std::vector<std::unique_ptr<kernels::Buffer>>* owned_;
  int64_t* weight_bytes_;
  absl::Status status_;
};

// The activations of one step, [tokens][width] each, padded to the
// backend's RowPadding: the residual stream x, `cur` (d_model or wider, a
// block's input and output), q, k, v, the attention output, gate and up.
struct StepBuffers {
  float *x, *cur, *q, *k, *v, *att, *gate, *up;
};

// The ops of one layer on one step, as the family's layer code issues them.
class LayerGraph {
 public:
  LayerGraph(kernels::Backend& backend, const ModelConfig& config,
             const kernels::StepViews& step, const kernels::KvCacheView& kv,
             const StepBuffers& buffers, int32_t layer)
      : be_(backend), c_(config), step_(step), kv_(kv), b_(buffers),
        layer_(layer) {}

  int64_t n_tokens() const { return step_.placement.n_tokens; }
  const ModelConfig& config() const { return c_; }
  int32_t layer() const { return layer_; }

  // cur = RmsNorm(x) * w.
  void Norm(const kernels::WeightView& w);
  // q, k, v = the projections of cur, plus their biases where present.
  void QkvProjections(const LayerWeights& w);
  // q and k normalised per head (RmsNorm over head_dim) by q_norm, k_norm.
  void QkNorm(const LayerWeights& w);
  // q and k rotated at the tokens' positions.
  void Rope(const kernels::RopeParams& rope);
  // K and V written to the layer's KV, attention of q over them (over the
  // sliding window on a local layer), then cur = wo * attention.
  void Attention(const kernels::WeightView& wo);
  // cur = RmsNorm(cur) * w: a block's output normalised before the
  // residual add.
  void PostNorm(const kernels::WeightView& w);
  // x += cur.
  void AddResidual();
  // cur = down * (silu(gate * cur) * (up * cur)).
  void SwiGluFfn(const LayerWeights& w);
  // cur = down * (gelu(gate * cur) * (up * cur)), tanh GELU.
  void GeGluFfn(const LayerWeights& w);

 private:
  kernels::Backend& be_;
  const ModelConfig& c_;
  const kernels::StepViews& step_;
  const kernels::KvCacheView& kv_;
  const StepBuffers& b_;
  int32_t layer_;
};

class Family {
 public:
  virtual ~Family() = default;
  // general.architecture.
  virtual const char* name() const = 0;
  // What differs from the common hyper-parameters ModelConfig::FromGguf
  // reads (RoPE mode, head_dim rules).
  virtual absl::Status Configure(const GgufFile& file,
                                 ModelConfig* config) const = 0;
  // One layer's weights; the first error is loader.status().
  virtual void LoadLayer(WeightLoader& loader, int32_t layer,
                         LayerWeights* w) const = 0;
  // One layer's ops: reads x, leaves the layer's output in x.
  virtual void Layer(LayerGraph& g, const LayerWeights& w) const = 0;
};

// The family of `architecture`, or null.
const Family* FindFamily(std::string_view architecture);
// "llama, qwen2, qwen3": for errors.
std::string SupportedFamilies();

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_ARCH_FAMILY_H_
