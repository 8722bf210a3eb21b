#include "tests/runtime/reference_forward.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "kernels/cpu/ops.h"

namespace kvsession::testing {
namespace {

using Matrix = std::vector<std::vector<double>>;  // [rows][cols]

Matrix Load(const runtime::GgufFile& file, const std::string& name) {
  const runtime::GgufTensorInfo* t = file.FindTensor(name);
  KVS_CHECK(t != nullptr) << name;
  const int64_t cols = t->dims[0];
  const int64_t rows = t->dims.size() > 1 ? t->dims[1] : 1;
  const uint64_t row_bytes = *kernels::TensorBytes(t->type, cols);
  Matrix m(rows, std::vector<double>(cols));
  std::vector<float> tmp(cols);
  for (int64_t r = 0; r < rows; ++r) {
    kernels::DequantizeRow(t->type,
                           static_cast<const char*>(t->data) + r * row_bytes,
                           tmp.data(), cols);
    for (int64_t c = 0; c < cols; ++c) m[r][c] = tmp[c];
  }
  return m;
}

std::vector<double> MatVec(const Matrix& w, const std::vector<double>& x) {
  std::vector<double> y(w.size(), 0.0);
  for (size_t r = 0; r < w.size(); ++r) {
    for (size_t c = 0; c < x.size(); ++c) y[r] += w[r][c] * x[c];
  }
  return y;
}

std::vector<double> RmsNorm(const std::vector<double>& x,
                            const std::vector<double>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

// RoPE within each head: pair p = i / 2 rotates by pos * base^(-2p / hd).
// Llama GGUFs pair adjacent elements (2p, 2p + 1); NeoX-style families
// (qwen2, qwen3, gemma3) pair p with p + hd / 2.
void Rope(std::vector<double>& x, int n_heads, int head_dim, int pos,
          double base, bool neox) {
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < head_dim; i += 2) {
      const double theta = pos * std::pow(base, -static_cast<double>(i) / head_dim);
      const double c = std::cos(theta), s = std::sin(theta);
      const int ia = neox ? i / 2 : i;
      const int ib = neox ? i / 2 + head_dim / 2 : i + 1;
      double& a = x[h * head_dim + ia];
      double& b = x[h * head_dim + ib];
      const double a0 = a, b0 = b;
      a = a0 * c - b0 * s;
      b = a0 * s + b0 * c;
    }
  }
}

// Per-head RMSNorm of n_heads rows of head_dim.
void HeadNorm(std::vector<double>& x, const std::vector<double>& w,
              int n_heads, double eps) {
  const size_t hd = w.size();
  for (int h = 0; h < n_heads; ++h) {
    std::vector<double> row(x.begin() + h * hd, x.begin() + (h + 1) * hd);
    row = RmsNorm(row, w, eps);
    std::copy(row.begin(), row.end(), x.begin() + h * hd);
  }
}

void AddTo(std::vector<double>& x, const std::vector<double>& b) {
  for (size_t i = 0; i < x.size(); ++i) x[i] += b[i];
}

// The optional tensor `name` as a vector, or empty.
std::vector<double> Optional(const runtime::GgufFile& file,
                             const std::string& name) {
  return file.FindTensor(name) != nullptr ? Load(file, name)[0]
                                          : std::vector<double>();
}

}  // namespace

std::vector<std::vector<double>> ReferenceLogits(
    const runtime::GgufFile& file, const runtime::ModelConfig& c,
    const std::vector<int32_t>& tokens) {
  const Matrix embd = Load(file, "token_embd.weight");
  const Matrix out_w = file.FindTensor("output.weight") != nullptr
                           ? Load(file, "output.weight")
                           : embd;
  const std::vector<double> out_norm = Load(file, "output_norm.weight")[0];
  const std::string arch = *file.GetString("general.architecture");
  const bool gemma = arch == "gemma3";
  const bool neox = arch != "llama";
  // Gemma 3: layer l attends to the last `window` positions unless
  // l % 6 == 5; those local layers rotate with base 10000.
  const int window =
      gemma ? static_cast<int>(*file.GetUint("gemma3.attention.sliding_window"))
            : 0;
  struct Layer {
    Matrix q, k, v, o, gate, up, down;
    std::vector<double> attn_norm, ffn_norm;
    std::vector<double> bq, bk, bv, q_norm, k_norm, post_attn, post_ffn;
  };
  std::vector<Layer> layers(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("blk.", l, ".");
    layers[l] = {Load(file, p + "attn_q.weight"),
                 Load(file, p + "attn_k.weight"),
                 Load(file, p + "attn_v.weight"),
                 Load(file, p + "attn_output.weight"),
                 Load(file, p + "ffn_gate.weight"),
                 Load(file, p + "ffn_up.weight"),
                 Load(file, p + "ffn_down.weight"),
                 Load(file, p + "attn_norm.weight")[0],
                 Load(file, p + "ffn_norm.weight")[0],
                 Optional(file, p + "attn_q.bias"),
                 Optional(file, p + "attn_k.bias"),
                 Optional(file, p + "attn_v.bias"),
                 Optional(file, p + "attn_q_norm.weight"),
                 Optional(file, p + "attn_k_norm.weight"),
                 Optional(file, p + "post_attention_norm.weight"),
                 Optional(file, p + "post_ffw_norm.weight")};
  }
  const int hd = c.head_dim;
  const int group = c.n_heads / c.n_kv_heads;
  // keys[l][pos] and values[l][pos]: contiguous, unquantized.
  std::vector<std::vector<std::vector<double>>> keys(c.n_layers),
      values(c.n_layers);
  std::vector<std::vector<double>> logits;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    std::vector<double> x = embd[tokens[pos]];
    if (gemma) {
      for (double& e : x) e *= std::sqrt(static_cast<double>(x.size()));
    }
    for (int l = 0; l < c.n_layers; ++l) {
      const Layer& L = layers[l];
      const bool local = gemma && l % 6 != 5;
      const double base = local ? 10000.0 : c.rope.freq_base;
      std::vector<double> h = RmsNorm(x, L.attn_norm, c.rms_eps);
      std::vector<double> q = MatVec(L.q, h), k = MatVec(L.k, h),
                          v = MatVec(L.v, h);
      if (!L.bq.empty()) {
        AddTo(q, L.bq);
        AddTo(k, L.bk);
        AddTo(v, L.bv);
      }
      if (!L.q_norm.empty()) {
        HeadNorm(q, L.q_norm, c.n_heads, c.rms_eps);
        HeadNorm(k, L.k_norm, c.n_kv_heads, c.rms_eps);
      }
      Rope(q, c.n_heads, hd, static_cast<int>(pos), base, neox);
      Rope(k, c.n_kv_heads, hd, static_cast<int>(pos), base, neox);
      keys[l].push_back(k);
      values[l].push_back(v);
      // Positions [first, pos]: all of them, or the window's.
      const size_t first = local && pos + 1 > static_cast<size_t>(window)
                               ? pos + 1 - window
                               : 0;
      std::vector<double> att(c.n_heads * hd, 0.0);
      for (int head = 0; head < c.n_heads; ++head) {
        const int kvh = head / group;
        std::vector<double> s(pos + 1);
        double mx = -1e300;
        for (size_t j = first; j <= pos; ++j) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) {
            dot += q[head * hd + i] * keys[l][j][kvh * hd + i];
          }
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (size_t j = first; j <= pos; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (size_t j = first; j <= pos; ++j) {
          for (int i = 0; i < hd; ++i) {
            att[head * hd + i] += s[j] / sum * values[l][j][kvh * hd + i];
          }
        }
      }
      std::vector<double> o = MatVec(L.o, att);
      if (!L.post_attn.empty()) o = RmsNorm(o, L.post_attn, c.rms_eps);
      AddTo(x, o);
      h = RmsNorm(x, L.ffn_norm, c.rms_eps);
      std::vector<double> g = MatVec(L.gate, h), u = MatVec(L.up, h);
      for (size_t i = 0; i < g.size(); ++i) {
        const double a = g[i];
        const double act =
            gemma ? 0.5 * a *
                        (1.0 + std::tanh(std::sqrt(2.0 / M_PI) *
                                         (a + 0.044715 * a * a * a)))
                  : a / (1.0 + std::exp(-a));
        g[i] = act * u[i];
      }
      std::vector<double> dn = MatVec(L.down, g);
      if (!L.post_ffn.empty()) dn = RmsNorm(dn, L.post_ffn, c.rms_eps);
      AddTo(x, dn);
    }
    logits.push_back(MatVec(out_w, RmsNorm(x, out_norm, c.rms_eps)));
  }
  return logits;
}

}  // namespace kvsession::testing
