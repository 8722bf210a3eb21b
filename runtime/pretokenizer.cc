#include "runtime/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvsession::runtime {
namespace {

// The split regexes of llama.cpp's BPE pre-tokenizers (src/llama-vocab.cpp,
// llm_tokenizer_bpe), which follow the `pre_tokenizer` of each model's
// tokenizer.json. The case-insensitive contraction group of the originals,
// (?i:'s|...), is spelled out with character classes as llama.cpp does.
constexpr char kGpt2[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|)"
    R"(\s+(?!\S))";
constexpr char kLlama3[] =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|)"
    R"([^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2 differs from Llama 3 only in splitting numbers into single digits.
constexpr char kQwen2[] =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|)"
    R"([^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr char kDigit[] = R"(\p{N})";

struct PreSpec {
  std::vector<const char*> regexes;
  bool ignore_merges = false;
  bool default_add_bos = false;
};

// Debian's Abseil has its own string_view type.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

// Maps tokenizer.ggml.pre to its regexes; names as in llama.cpp, plus the
// spelling "gpt2".
absl::StatusOr<PreSpec> SpecFor(std::string_view pre) {
  auto is_any = [pre](std::initializer_list<std::string_view> names) {
    for (std::string_view n : names) {
      if (pre == n) return true;
    }
    return false;
  };
  if (pre.empty() || pre == "default") {
    return PreSpec{
        {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}};
  }
  if (is_any({"gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais"})) {
    return PreSpec{{kGpt2}};
  }
  if (is_any({"smollm", "starcoder", "refact", "command-r", "codeshell",
              "exaone", "minerva-7b"})) {
    return PreSpec{{kDigit, kGpt2}};
  }
  if (is_any({"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"})) {
    return PreSpec{{kLlama3},
                   /*ignore_merges=*/true,
                   /*default_add_bos=*/true};
  }
  if (is_any({"dbrx", "smaug-bpe"})) return PreSpec{{kLlama3}};
  if (is_any({"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"})) {
    return PreSpec{{kQwen2}};
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported tokenizer.ggml.pre: '", Sv(pre), "'"));
}

}  // namespace

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

// Match limits raised from PCRE2's defaults (10M steps): `\s*[\r\n]+`
// backtracks once over a whole run of spaces, and a longer run must still
// split as the regex says. The patterns have no nested quantifiers, so the
// work stays linear in the input.
struct PreTokenizer::MatchContext {
  pcre2_match_context* context = nullptr;
  ~MatchContext() { pcre2_match_context_free(context); }
};

PreTokenizer::~PreTokenizer() = default;

bool PreTokenizer::DefaultAddBos(std::string_view pre_name) {
  absl::StatusOr<PreSpec> spec = SpecFor(pre_name);
  return spec.ok() && spec->default_add_bos;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(
    std::string_view pre_name) {
  absl::StatusOr<PreSpec> spec = SpecFor(pre_name);
  if (!spec.ok()) return spec.status();
  std::unique_ptr<PreTokenizer> pre(new PreTokenizer());
  pre->ignore_merges_ = spec->ignore_merges;
  pre->match_context_ = std::make_unique<MatchContext>();
  pre->match_context_->context = pcre2_match_context_create(nullptr);
  if (pre->match_context_->context == nullptr) {
    return absl::ResourceExhaustedError("pcre2_match_context_create failed");
  }
  pcre2_set_match_limit(pre->match_context_->context, UINT32_MAX);
  pcre2_set_depth_limit(pre->match_context_->context, UINT32_MAX);
  pcre2_set_heap_limit(pre->match_context_->context, UINT32_MAX);
  for (const char* pattern : spec->regexes) {
    auto regex = std::make_unique<Regex>();
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    // UCP: \s and friends follow Unicode, as in the HF tokenizers.
    // MATCH_INVALID_UTF: invalid bytes simply never match instead of making
    // the whole match fail.
    regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern),
                                PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                                &error, &error_offset, nullptr);
    if (regex->code == nullptr) {
      std::array<PCRE2_UCHAR, 256> msg{};
      pcre2_get_error_message(error, msg.data(), msg.size());
      return absl::InternalError(
          absl::StrCat("pre-tokenizer regex does not compile at ", error_offset,
                       ": ", reinterpret_cast<const char*>(msg.data())));
    }
    // Without JIT support pcre2_match interprets; same results, slower.
    pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE);
    pre->regexes_.push_back(std::move(regex));
  }
  return pre;
}

void PreTokenizer::Split(std::string_view text,
                         std::vector<std::string_view>* pieces) const {
  if (text.empty()) return;
  std::vector<std::string_view> current = {text};
  std::vector<std::string_view> next;
  for (const auto& regex : regexes_) {
    pcre2_match_data* md =
        pcre2_match_data_create_from_pattern(regex->code, nullptr);
    next.clear();
    for (std::string_view frag : current) {
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(frag.data());
      size_t gap_start = 0;
      size_t pos = 0;
      while (pos < frag.size()) {
        int rc = pcre2_match(regex->code, subject, frag.size(), pos, 0, md,
                             match_context_->context);
        if (rc < 0) break;  // no (further) match; the rest is a gap
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        size_t begin = ov[0];
        size_t end = ov[1];
        if (end <= begin) {  // an empty match: step over one byte
          pos = begin + 1;
          continue;
        }
        if (begin > gap_start) {
          next.push_back(frag.substr(gap_start, begin - gap_start));
        }
        next.push_back(frag.substr(begin, end - begin));
        gap_start = pos = end;
      }
      if (gap_start < frag.size()) next.push_back(frag.substr(gap_start));
    }
    pcre2_match_data_free(md);
    std::swap(current, next);
  }
  pieces->insert(pieces->end(), current.begin(), current.end());
}

}  // namespace kvsession::runtime
