// kvsession-requantize: rewrites a GGUF's weight matrices in another type or
// in llama.cpp's Q4_K_M mix, with our own quantizers (kernels/cpu/ops.h), so
// that benchmarks compare weight types on one model. The values are
// dequantized from the input and quantized again, so the output is a lossy
// copy: good for speed, not for quality comparisons.
//
//   kvsession-requantize --in=MODEL.gguf --out=OUT.gguf --mix=q4_k_m
//   kvsession-requantize --in=MODEL.gguf --out=OUT.gguf --mix=q8_0
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/ops.h"
#include "runtime/gguf.h"

ABSL_FLAG(std::string, in, "", "Input GGUF");
ABSL_FLAG(std::string, out, "", "Output GGUF");
ABSL_FLAG(std::string, mix, "q4_k_m",
          "q4_k_m (llama.cpp's mix), or one type for every matrix: q4_0, "
          "q4_1, q5_0, q8_0, q4_k, q5_k, q6_k, f16");

namespace kvsession {
namespace {

using kernels::GgmlType;

absl::StatusOr<GgmlType> ParseType(const std::string& name) {
  const struct {
    const char* name;
    GgmlType type;
  } kTypes[] = {{"q4_0", GgmlType::kQ4_0}, {"q4_1", GgmlType::kQ4_1},
                {"q5_0", GgmlType::kQ5_0}, {"q8_0", GgmlType::kQ8_0},
                {"q4_k", GgmlType::kQ4_K}, {"q5_k", GgmlType::kQ5_K},
                {"q6_k", GgmlType::kQ6_K}, {"f16", GgmlType::kF16}};
  for (const auto& t : kTypes) {
    if (name == t.name) return t.type;
  }
  return absl::InvalidArgumentError(absl::StrCat("--mix: unknown '", name, "'"));
}

// The layer index of "blk.N.name", or -1.
int LayerOf(const std::string& name) {
  std::vector<std::string> parts = absl::StrSplit(name, '.');
  int layer = -1;
  if (parts.size() > 2 && parts[0] == "blk" && absl::SimpleAtoi(parts[1], &layer)) {
    return layer;
  }
  return -1;
}

// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the head (or a tied embedding)
// and for attn_v / ffn_down of the layers its use_more_bits rule picks.
GgmlType Q4KM(const std::string& name, int n_layers, bool tied) {
  if (name == "output.weight") return GgmlType::kQ6_K;
  if (name == "token_embd.weight") return tied ? GgmlType::kQ6_K : GgmlType::kQ4_K;
  const int i = LayerOf(name);
  const bool more_bits = i >= 0 && (i < n_layers / 8 || i >= 7 * n_layers / 8 ||
                                    (i - n_layers / 8) % 3 == 2);
  if ((absl::StrContains(name, "attn_v.") || absl::StrContains(name, "ffn_down.")) &&
      more_bits) {
    return GgmlType::kQ6_K;
  }
  return GgmlType::kQ4_K;
}

// K-quants need rows of whole 256-element super-blocks; llama.cpp falls
// back to these for narrower rows.
GgmlType Fallback(GgmlType t, int64_t cols) {
  if (cols % 256 == 0) return t;
  switch (t) {
    case GgmlType::kQ4_K:
      return GgmlType::kQ5_0;
    case GgmlType::kQ5_K:
      return GgmlType::kQ5_1;
    case GgmlType::kQ6_K:
      return GgmlType::kQ8_0;
    default:
      return t;
  }
}

absl::Status Run() {
  absl::StatusOr<std::unique_ptr<runtime::GgufFile>> file =
      runtime::GgufFile::Open(absl::GetFlag(FLAGS_in));
  if (!file.ok()) return file.status();
  const runtime::GgufFile* in = file->get();
  const std::string mix = absl::GetFlag(FLAGS_mix);
  GgmlType single = GgmlType::kF32;
  if (mix != "q4_k_m") {
    absl::StatusOr<GgmlType> t = ParseType(mix);
    if (!t.ok()) return t.status();
    single = *t;
  }
  absl::StatusOr<std::string> arch = in->GetString("general.architecture");
  if (!arch.ok()) return arch.status();
  absl::StatusOr<uint64_t> layers = in->GetUint(*arch + ".block_count");
  if (!layers.ok()) return layers.status();
  const bool tied = in->FindTensor("output.weight") == nullptr;

  runtime::GgufWriter w;
  for (const auto& [key, value] : in->metadata()) {
    if (key != "general.file_type") w.AddValue(key, value);
  }
  int64_t bytes_in = 0, bytes_out = 0;
  for (const runtime::GgufTensorInfo& t : in->tensors()) {
    bytes_in += static_cast<int64_t>(t.n_bytes);
    const std::string raw(static_cast<const char*>(t.data), t.n_bytes);
    if (t.dims.size() != 2) {  // norms and biases stay as they are
      if (absl::Status s = w.AddTensor(t.name, t.type, t.dims, raw); !s.ok()) {
        return s;
      }
      bytes_out += static_cast<int64_t>(t.n_bytes);
      continue;
    }
    const int64_t cols = t.dims[0], rows = t.dims[1];
    const GgmlType to = Fallback(
        mix == "q4_k_m" ? Q4KM(t.name, static_cast<int>(*layers), tied) : single,
        cols);
    if (!kernels::CanQuantize(to)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot quantize to ", kernels::TypeName(to)));
    }
    absl::StatusOr<uint64_t> src_row = kernels::TensorBytes(t.type, cols);
    absl::StatusOr<uint64_t> dst_row = kernels::TensorBytes(to, cols);
    if (!src_row.ok()) return src_row.status();
    if (!dst_row.ok()) return dst_row.status();
    std::string out(*dst_row * rows, '\0');
    std::vector<float> row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      kernels::DequantizeRow(t.type, static_cast<const char*>(t.data) + r * *src_row,
                             row.data(), cols);
      kernels::QuantizeRow(to, row.data(), out.data() + r * *dst_row, cols);
    }
    bytes_out += static_cast<int64_t>(out.size());
    std::printf("%-28s %-6s -> %s\n", t.name.c_str(),
                kernels::TypeName(t.type),
                kernels::TypeName(to));
    if (absl::Status s = w.AddTensor(t.name, to, t.dims, std::move(out)); !s.ok()) {
      return s;
    }
  }
  std::printf("weights: %.1f MB -> %.1f MB\n", bytes_in / 1e6, bytes_out / 1e6);
  return w.WriteFile(absl::GetFlag(FLAGS_out));
}

}  // namespace
}  // namespace kvsession

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_in).empty() || absl::GetFlag(FLAGS_out).empty()) {
    std::fprintf(stderr, "usage: kvsession-requantize --in=A.gguf --out=B.gguf "
                         "[--mix=q4_k_m|q8_0|...]\n");
    return 2;
  }
  absl::Status s = kvsession::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "kvsession-requantize: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
