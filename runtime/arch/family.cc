#include "runtime/arch/family.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cpu/ops.h"
#include "runtime/arch/families.h"
#include "runtime/gguf.h"

namespace kvsession::runtime {

using kernels::WeightView;

namespace {

// The registry: adding a family is its file and one line here.
const Family* const* Families(size_t* n) {
  static const Family* const kFamilies[] = {&LlamaFamily(), &Qwen2Family(),
                                            &Qwen3Family(), &Gemma3Family()};
  *n = std::size(kFamilies);
  return kFamilies;
}

}  // namespace

const Family* FindFamily(std::string_view architecture) {
  size_t n = 0;
  const Family* const* f = Families(&n);
  for (size_t i = 0; i < n; ++i) {
    if (architecture == f[i]->name()) return f[i];
  }
  return nullptr;
}

std::string SupportedFamilies() {
  size_t n = 0;
  const Family* const* f = Families(&n);
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) names.emplace_back(f[i]->name());
  return absl::StrJoin(names, ", ");
}

std::string WeightLoader::Name(int32_t layer, std::string_view tensor) {
  return absl::StrCat("blk.", layer, ".", std::string(tensor));
}

bool WeightLoader::Has(const std::string& name) const {
  return file_.FindTensor(name) != nullptr;
}

bool WeightLoader::Fail(absl::Status s) {
  if (status_.ok()) status_ = std::move(s);
  return false;
}

WeightView WeightLoader::Host(const std::string& name, int64_t rows,
                              int64_t cols) {
  if (!status_.ok()) return {};
  const GgufTensorInfo* t = file_.FindTensor(name);
  if (t == nullptr) {
    Fail(absl::InvalidArgumentError(
        absl::StrCat("model: tensor '", name, "' missing")));
    return {};
  }
  if (t->dims.size() != 2 || t->dims[0] != cols || t->dims[1] != rows) {
    std::string dims;
    for (int64_t d : t->dims) absl::StrAppend(&dims, dims.empty() ? "" : ",", d);
    Fail(absl::InvalidArgumentError(
        absl::StrCat("model: tensor '", name, "' has dims [", dims,
                     "], expected [", cols, ",", rows, "]")));
    return {};
  }
  if (!kernels::Traits(t->type).weight_type) {
    Fail(absl::InvalidArgumentError(absl::StrCat(
        "model: tensor '", name, "' has type ", kernels::TypeName(t->type))));
    return {};
  }
  absl::StatusOr<uint64_t> row_bytes = kernels::TensorBytes(t->type, cols);
  if (!row_bytes.ok()) {
    Fail(row_bytes.status());
    return {};
  }
  WeightView w;
  w.type = t->type;
  w.data = t->data;
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = *row_bytes;
  *weight_bytes_ += static_cast<int64_t>(t->n_bytes);
  return w;
}

WeightView WeightLoader::Matrix(const std::string& name, int64_t rows,
                                int64_t cols) {
  const WeightView host = Host(name, rows, cols);
  if (!status_.ok()) return {};
  absl::StatusOr<WeightView> w = backend_->PrepareWeight(host);
  if (!w.ok()) {
    Fail(w.status());
    return {};
  }
  return *w;
}

void WeightLoader::Group(std::initializer_list<Item> items, int64_t cols) {
  std::vector<WeightView> host;
  for (const Item& it : items) host.push_back(Host(it.name, it.rows, cols));
  if (!status_.ok()) return;
  absl::StatusOr<std::vector<WeightView>> group =
      backend_->PrepareWeights(host);
  if (!group.ok()) {
    Fail(group.status());
    return;
  }
  size_t i = 0;
  for (const Item& it : items) *it.dst = (*group)[i++];
}

WeightView WeightLoader::Vector(const std::string& name, int64_t n) {
  if (!status_.ok()) return {};
  const GgufTensorInfo* t = file_.FindTensor(name);
  if (t == nullptr || t->dims.size() != 1 || t->dims[0] != n ||
      !kernels::Traits(t->type).weight_type) {
    Fail(absl::InvalidArgumentError(
        absl::StrCat("model: tensor '", name, "' missing or not [", n, "]")));
    return {};
  }
  // Vectors are tiny; keep them as f32 whatever the file stores.
  std::vector<float> host(n);
  kernels::DequantizeRow(t->type, t->data, host.data(), n);
  absl::StatusOr<std::unique_ptr<kernels::Buffer>> buf =
      backend_->Allocate(host.size() * sizeof(float));
  if (!buf.ok()) {
    Fail(buf.status());
    return {};
  }
  backend_->CopyFromHost(host.data(), (*buf)->data(),
                         host.size() * sizeof(float));
  WeightView w;
  w.type = kernels::GgmlType::kF32;
  w.data = (*buf)->data();
  w.rows = 1;
  w.cols = n;
  w.row_bytes = host.size() * sizeof(float);
  *weight_bytes_ += static_cast<int64_t>(t->n_bytes);
  owned_->push_back(*std::move(buf));
  return w;
}

void WeightLoader::Attention(int32_t layer, LayerWeights* w) {
  const ModelConfig& c = config_;
  const int64_t q_dim = int64_t{c.n_heads} * c.head_dim;
  const int64_t kv_dim = int64_t{c.n_kv_heads} * c.head_dim;
  w->attn_norm = Vector(Name(layer, "attn_norm.weight"), c.d_model);
  Group({{&w->wq, Name(layer, "attn_q.weight"), q_dim},
         {&w->wk, Name(layer, "attn_k.weight"), kv_dim},
         {&w->wv, Name(layer, "attn_v.weight"), kv_dim}},
        c.d_model);
  w->wo = Matrix(Name(layer, "attn_output.weight"), c.d_model, q_dim);
}

void WeightLoader::GatedFfn(int32_t layer, LayerWeights* w) {
  const ModelConfig& c = config_;
  w->ffn_norm = Vector(Name(layer, "ffn_norm.weight"), c.d_model);
  Group({{&w->gate, Name(layer, "ffn_gate.weight"), c.ffn_dim},
         {&w->up, Name(layer, "ffn_up.weight"), c.ffn_dim}},
        c.d_model);
  w->down = Matrix(Name(layer, "ffn_down.weight"), c.d_model, c.ffn_dim);
}

namespace {
const float* F32(const WeightView& w) {
  return static_cast<const float*>(w.data);
}
}  // namespace

void LayerGraph::Norm(const WeightView& w) {
  be_.RmsNorm(b_.x, F32(w), n_tokens(), c_.d_model, c_.rms_eps, b_.cur);
}

void LayerGraph::QkvProjections(const LayerWeights& w) {
  const int64_t T = n_tokens();
  be_.MatMul(w.wq, b_.cur, T, b_.q);
  be_.MatMul(w.wk, b_.cur, T, b_.k);
  be_.MatMul(w.wv, b_.cur, T, b_.v);
  const struct {
    const WeightView& bias;
    float* out;
    int64_t width;
  } biases[] = {{w.bq, b_.q, w.wq.rows}, {w.bk, b_.k, w.wk.rows},
                {w.bv, b_.v, w.wv.rows}};
  for (const auto& b : biases) {
    if (b.bias.data != nullptr) {
      be_.AddBias(b.out, F32(b.bias), T, b.width, b.out);
    }
  }
}

void LayerGraph::QkNorm(const LayerWeights& w) {
  const int64_t T = n_tokens();
  be_.RmsNorm(b_.q, F32(w.q_norm), T * c_.n_heads, c_.head_dim, c_.rms_eps,
              b_.q);
  be_.RmsNorm(b_.k, F32(w.k_norm), T * c_.n_kv_heads, c_.head_dim,
              c_.rms_eps, b_.k);
}

void LayerGraph::Rope(const kernels::RopeParams& rope) {
  const int32_t* pos = step_.placement.positions;
  be_.Rope(b_.q, n_tokens(), c_.n_heads, pos, rope);
  be_.Rope(b_.k, n_tokens(), c_.n_kv_heads, pos, rope);
}

void LayerGraph::Attention(const WeightView& wo) {
  kernels::AttentionParams attn;
  attn.n_heads = c_.n_heads;
  attn.scale = c_.attn_scale > 0
                   ? c_.attn_scale
                   : 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
  if (c_.IsLocalLayer(layer_)) attn.window = c_.sliding_window;
  be_.KvWrite(kv_, layer_, step_.placement, b_.k, b_.v);
  be_.Attention(kv_, layer_, step_.placement, b_.q, attn, b_.att);
  be_.MatMul(wo, b_.att, n_tokens(), b_.cur);
}

void LayerGraph::PostNorm(const WeightView& w) {
  be_.RmsNorm(b_.cur, F32(w), n_tokens(), c_.d_model, c_.rms_eps, b_.cur);
}

void LayerGraph::AddResidual() {
  be_.Add(b_.x, b_.cur, n_tokens() * c_.d_model, b_.x);
}

void LayerGraph::SwiGluFfn(const LayerWeights& w) {
  const int64_t T = n_tokens();
  be_.MatMul(w.gate, b_.cur, T, b_.gate);
  be_.MatMul(w.up, b_.cur, T, b_.up);
  be_.SwiGlu(b_.gate, b_.up, T * c_.ffn_dim, b_.gate);
  be_.MatMul(w.down, b_.gate, T, b_.cur);
}

void LayerGraph::GeGluFfn(const LayerWeights& w) {
  const int64_t T = n_tokens();
  be_.MatMul(w.gate, b_.cur, T, b_.gate);
  be_.MatMul(w.up, b_.cur, T, b_.up);
  be_.GeGlu(b_.gate, b_.up, T * c_.ffn_dim, b_.gate);
  be_.MatMul(w.down, b_.gate, T, b_.cur);
}

}  // namespace kvsession::runtime
