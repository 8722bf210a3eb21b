#include "runtime/model_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/arch/family.h"
#include "runtime/gguf.h"

namespace kvsession::runtime {
namespace {

absl::StatusOr<int32_t> GetDim(const GgufFile& file, const std::string& key,
                               int64_t min, int64_t max) {
  absl::StatusOr<uint64_t> v = file.GetUint(key);
  if (!v.ok()) return v.status();
  if (*v < static_cast<uint64_t>(min) || *v > static_cast<uint64_t>(max)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model: ", key, " = ", *v, " is outside [", min, ", ", max, "]"));
  }
  return static_cast<int32_t>(*v);
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromGguf(const GgufFile& file) {
  ModelConfig c;
  absl::StatusOr<std::string> arch = file.GetString("general.architecture");
  if (!arch.ok()) return arch.status();
  c.architecture = *arch;
  const Family* family = FindFamily(c.architecture);
  if (family == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "model: architecture '", c.architecture,
        "' is not supported (supported: ", SupportedFamilies(), ")"));
  }
  if (absl::StatusOr<std::string> name = file.GetString("general.name");
      name.ok()) {
    c.name = *name;
  }
  const std::string p = c.architecture + ".";
  constexpr int64_t kMaxDim = 1 << 20;
  absl::StatusOr<int32_t> v = GetDim(file, p + "block_count", 1, 4096);
  if (!v.ok()) return v.status();
  c.n_layers = *v;
  if (v = GetDim(file, p + "embedding_length", 1, kMaxDim); !v.ok()) {
    return v.status();
  }
  c.d_model = *v;
  if (v = GetDim(file, p + "feed_forward_length", 1, kMaxDim); !v.ok()) {
    return v.status();
  }
  c.ffn_dim = *v;
  if (v = GetDim(file, p + "attention.head_count", 1, 4096); !v.ok()) {
    return v.status();
  }
  c.n_heads = *v;
  c.n_kv_heads = c.n_heads;
  if (file.Find(p + "attention.head_count_kv") != nullptr) {
    if (v = GetDim(file, p + "attention.head_count_kv", 1, 4096); !v.ok()) {
      return v.status();
    }
    c.n_kv_heads = *v;
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: head_count ", c.n_heads, " is not a multiple of ",
                     "head_count_kv ", c.n_kv_heads));
  }
  // head_dim is attention.key_length where the file says (Qwen3, Gemma 3:
  // not d_model / heads), else d_model / heads.
  if (file.Find(p + "attention.key_length") != nullptr) {
    if (v = GetDim(file, p + "attention.key_length", 1, 1024); !v.ok()) {
      return v.status();
    }
    c.head_dim = *v;
  } else if (c.d_model % c.n_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model: embedding_length ", c.d_model,
                     " is not a multiple of head_count ", c.n_heads));
  } else {
    c.head_dim = c.d_model / c.n_heads;
  }
  if (file.Find(p + "attention.value_length") != nullptr) {
    if (v = GetDim(file, p + "attention.value_length", 1, 1024); !v.ok()) {
      return v.status();
    }
    if (*v != c.head_dim) {
      return absl::UnimplementedError(
          "model: attention.value_length != attention.key_length");
    }
  }
  c.context_length = 4096;
  if (file.Find(p + "context_length") != nullptr) {
    if (v = GetDim(file, p + "context_length", 1, 1 << 24); !v.ok()) {
      return v.status();
    }
    c.context_length = *v;
  }
  if (absl::StatusOr<double> eps =
          file.GetFloat(p + "attention.layer_norm_rms_epsilon");
      eps.ok()) {
    c.rms_eps = static_cast<float>(*eps);
  }
  c.rope.head_dim = c.head_dim;
  c.rope.rot_dim = c.head_dim;
  if (file.Find(p + "rope.dimension_count") != nullptr) {
    if (v = GetDim(file, p + "rope.dimension_count", 2, c.head_dim); !v.ok()) {
      return v.status();
    }
    c.rope.rot_dim = *v;
  }
  c.rope.freq_base = 10000.0f;
  if (absl::StatusOr<double> base = file.GetFloat(p + "rope.freq_base");
      base.ok()) {
    c.rope.freq_base = static_cast<float>(*base);
  }
  if (absl::StatusOr<std::string> scaling =
          file.GetString(p + "rope.scaling.type");
      scaling.ok() && *scaling != "none") {
    if (*scaling != "linear") {
      return absl::UnimplementedError(
          absl::StrCat("model: rope scaling '", *scaling, "' not supported"));
    }
    absl::StatusOr<double> factor = file.GetFloat(p + "rope.scaling.factor");
    if (!factor.ok() || !(*factor > 0)) {
      return absl::InvalidArgumentError("model: bad rope.scaling.factor");
    }
    c.rope.freq_scale = static_cast<float>(1.0 / *factor);
  }
  if (!std::isfinite(c.rms_eps) || c.rms_eps <= 0 ||
      !std::isfinite(c.rope.freq_base) || c.rope.freq_base <= 0) {
    return absl::InvalidArgumentError("model: bad epsilon or rope base");
  }
  const GgufTensorInfo* embd = file.FindTensor("token_embd.weight");
  if (embd == nullptr || embd->dims.size() != 2) {
    return absl::InvalidArgumentError("model: token_embd.weight missing");
  }
  c.vocab_size = static_cast<int32_t>(embd->dims[1]);
  if (absl::Status s = family->Configure(file, &c); !s.ok()) return s;
  return c;
}

}  // namespace kvsession::runtime
