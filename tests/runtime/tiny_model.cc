#include "tests/runtime/tiny_model.h"

#include <cmath>
#include <cstdlib>
#include <random>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "runtime/gguf.h"

namespace kvsession::testing {
namespace {

using kernels::GgmlType;

// GPT-2's byte to printable-unicode mapping, as UTF-8 strings.
std::vector<std::string> ByteTokens() {
  std::vector<int> cps(256, -1);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) ||
                           (b >= 174 && b <= 255);
    cps[b] = printable ? b : next++;
  }
  std::vector<std::string> out;
  for (int cp : cps) {
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    out.push_back(s);
  }
  return out;
}

class Rng {
 public:
  explicit Rng(uint32_t seed) : gen_(seed) {}
  // Box-Muller on our own uniform so values do not depend on the library.
  float Normal() {
    const double u1 = (static_cast<double>(gen_() >> 11) + 1.0) / 9007199254740993.0;
    const double u2 = static_cast<double>(gen_() >> 11) / 9007199254740992.0;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) *
                              std::cos(6.283185307179586 * u2));
  }

 private:
  std::mt19937_64 gen_;
};

std::string Quantized(GgmlType type, const std::vector<float>& values,
                      int64_t cols) {
  const int64_t rows = static_cast<int64_t>(values.size()) / cols;
  const uint64_t row_bytes = *kernels::TensorBytes(type, cols);
  std::string out(row_bytes * rows, '\0');
  for (int64_t r = 0; r < rows; ++r) {
    kernels::QuantizeRow(type, values.data() + r * cols,
                         out.data() + r * row_bytes, cols);
  }
  return out;
}

// What qwen2, qwen3 and gemma3 layers hold beyond llama's.
template <typename Matrix, typename Add>
absl::Status AddFamilyTensors(const TinyModelOptions& o, const std::string& p,
                              int64_t hd, int64_t q_dim, int64_t kv,
                              Matrix& matrix, Add& add) {
  if (o.architecture == "qwen2") {
    const struct {
      const char* name;
      int64_t n;
    } biases[] = {{"attn_q.bias", q_dim}, {"attn_k.bias", kv},
                  {"attn_v.bias", kv}};
    for (const auto& b : biases) {
      if (absl::Status s = add(p + b.name, GgmlType::kF32,
                               matrix(1, b.n, 0.5f), b.n);
          !s.ok()) {
        return s;
      }
    }
  }
  if (o.architecture == "qwen3" || o.architecture == "gemma3") {
    for (const char* name : {"attn_q_norm.weight", "attn_k_norm.weight"}) {
      std::vector<float> v = matrix(1, hd, 0.1f);
      for (float& x : v) x += 1.0f;
      if (absl::Status s = add(p + name, GgmlType::kF32, v, hd); !s.ok()) {
        return s;
      }
    }
  }
  if (o.architecture == "gemma3") {
    for (const char* name :
         {"post_attention_norm.weight", "post_ffw_norm.weight"}) {
      std::vector<float> v = matrix(1, o.d_model, 0.1f);
      for (float& x : v) x += 1.0f;
      if (absl::Status s = add(p + name, GgmlType::kF32, v, o.d_model);
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteTinyModel(const TinyModelOptions& o,
                            const std::string& path) {
  runtime::GgufWriter w;
  const std::string& arch = o.architecture;
  const int64_t hd = o.head_dim > 0 ? o.head_dim : o.d_model / o.n_heads;
  const std::string k = arch + ".";
  w.AddString("general.architecture", arch);
  w.AddString("general.name", "tiny-test-" + arch);
  w.AddUint32(k + "block_count", o.n_layers);
  w.AddUint32(k + "context_length", o.context_length);
  w.AddUint32(k + "embedding_length", o.d_model);
  w.AddUint32(k + "feed_forward_length", o.ffn_dim);
  w.AddUint32(k + "attention.head_count", o.n_heads);
  w.AddUint32(k + "attention.head_count_kv", o.n_kv_heads);
  w.AddFloat32(k + "rope.freq_base", o.rope_base);
  w.AddFloat32(k + "attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddUint32(k + "rope.dimension_count", static_cast<uint32_t>(hd));
  if (arch == "qwen3" || arch == "gemma3") {
    w.AddUint32(k + "attention.key_length", static_cast<uint32_t>(hd));
    w.AddUint32(k + "attention.value_length", static_cast<uint32_t>(hd));
  }
  if (arch == "gemma3") {
    w.AddUint32(k + "attention.sliding_window",
                static_cast<uint32_t>(o.sliding_window));
  }

  std::vector<std::string> tokens = {"<|endoftext|>", "<|im_start|>",
                                     "<|im_end|>"};
  std::vector<int32_t> types = {3, 3, 3};
  const std::vector<std::string> bytes = ByteTokens();
  for (const std::string& b : bytes) {
    tokens.push_back(b);
    types.push_back(1);
  }
  // A few merges so BPE has work to do: "Ġt", "he", "Ġthe", "in", "er".
  const std::string space = bytes[' '];
  const std::vector<std::pair<std::string, std::string>> merges = {
      {space, "t"}, {"h", "e"}, {space + "t", "he"}, {"i", "n"}, {"e", "r"}};
  std::vector<std::string> merge_lines;
  for (const auto& [a, b] : merges) {
    merge_lines.push_back(a + " " + b);
    tokens.push_back(a + b);
    types.push_back(1);
  }
  const int32_t vocab = static_cast<int32_t>(tokens.size());
  w.AddString("tokenizer.ggml.model", "gpt2");
  w.AddString("tokenizer.ggml.pre", "smollm");
  w.AddStringArray("tokenizer.ggml.tokens", tokens);
  w.AddInt32Array("tokenizer.ggml.token_type", types);
  w.AddStringArray("tokenizer.ggml.merges", merge_lines);
  w.AddUint32("tokenizer.ggml.bos_token_id", kTinyImStart);
  w.AddUint32("tokenizer.ggml.eos_token_id", kTinyImEnd);
  w.AddUint32("tokenizer.ggml.padding_token_id", kTinyEndOfText);
  w.AddBool("tokenizer.ggml.add_bos_token", false);
  w.AddString(
      "tokenizer.chat_template",
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
      "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
      "{% endif %}");

  Rng rng(o.seed);
  auto matrix = [&](int64_t rows, int64_t cols, float scale) {
    std::vector<float> v(rows * cols);
    for (float& x : v) x = rng.Normal() * scale;
    return v;
  };
  auto norm = [&](int64_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = 1.0f + 0.1f * rng.Normal();
    return v;
  };
  auto add = [&](const std::string& name, GgmlType type,
                 const std::vector<float>& v, int64_t cols) -> absl::Status {
    const int64_t rows = static_cast<int64_t>(v.size()) / cols;
    std::vector<int64_t> dims = {cols};
    const bool vector = name.find("norm") != std::string::npos ||
                        name.ends_with(".bias");
    if (rows > 1 || !vector) dims.push_back(rows);
    return w.AddTensor(name, type, dims, Quantized(type, v, cols));
  };
  const int64_t d = o.d_model;
  const int64_t q_dim = hd * o.n_heads;
  const int64_t kv = hd * o.n_kv_heads;
  const float s_in = 1.0f / std::sqrt(static_cast<float>(d));
  const float s_ffn = 1.0f / std::sqrt(static_cast<float>(o.ffn_dim));
  if (absl::Status s = add("token_embd.weight", o.embedding_type,
                           matrix(vocab, d, 0.25f), d);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = add("output_norm.weight", GgmlType::kF32, norm(d), d);
      !s.ok()) {
    return s;
  }
  if (!o.tied_output) {
    if (absl::Status s = add("output.weight", o.matrix_type,
                             matrix(vocab, d, s_in), d);
        !s.ok()) {
      return s;
    }
  }
  for (int32_t l = 0; l < o.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    struct Item {
      const char* name;
      int64_t rows, cols;
      float scale;
    };
    const Item items[] = {
        {"attn_q.weight", q_dim, d, s_in},     {"attn_k.weight", kv, d, s_in},
        {"attn_v.weight", kv, d, s_in},
        {"attn_output.weight", d, q_dim, 1.0f / std::sqrt(float(q_dim))},
        {"ffn_gate.weight", o.ffn_dim, d, s_in}, {"ffn_up.weight", o.ffn_dim, d, s_in},
        {"ffn_down.weight", d, o.ffn_dim, s_ffn},
    };
    for (const Item& it : items) {
      if (absl::Status s = add(p + it.name, o.matrix_type,
                               matrix(it.rows, it.cols, it.scale), it.cols);
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = add(p + "attn_norm.weight", GgmlType::kF32, norm(d), d);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = add(p + "ffn_norm.weight", GgmlType::kF32, norm(d), d);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = AddFamilyTensors(o, p, hd, q_dim, kv, matrix, add);
        !s.ok()) {
      return s;
    }
  }
  return w.WriteFile(path);
}

namespace {

// Each (family, shape) model is written once per process.
const std::string& CachedModel(const std::string& architecture, bool wide) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* paths = new std::map<std::string, std::string>();
  const std::string key = architecture + (wide ? "-wide" : "");
  absl::MutexLock lock(&mu);
  auto it = paths->find(key);
  if (it != paths->end()) return it->second;
  char tmpl[] = "/tmp/kvsession-tiny-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  KVS_CHECK(dir != nullptr);
  const std::string path = std::string(dir) + "/tiny-" + key + ".gguf";
  TinyModelOptions o;
  o.architecture = architecture;
  if (wide) {
    o.d_model = 256;
    o.ffn_dim = 512;
  }
  // Qwen3's head_dim is not d_model / heads.
  if (architecture == "qwen3") o.head_dim = wide ? 128 : 32;
  if (architecture == "gemma3") {
    o.n_layers = 6;  // one period of Gemma 3's layer pattern
    if (wide) {
      o.head_dim = 256;
      o.n_kv_heads = 1;
    }
  }
  KVS_CHECK_OK(WriteTinyModel(o, path));
  return paths->emplace(key, path).first->second;
}

}  // namespace

const std::string& TinyModelPath(const std::string& architecture) {
  return CachedModel(architecture, false);
}

const std::string& WideTinyModelPath(const std::string& architecture) {
  return CachedModel(architecture, true);
}

}  // namespace kvsession::testing
