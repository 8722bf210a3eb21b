#include "runtime/chat_template.h"

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvsession::runtime {
namespace {

// Debian's Abseil has its own string_view type.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

constexpr char kImStart[] = "<|im_start|>";
constexpr char kImEnd[] = "<|im_end|>";
constexpr char kBeginOfText[] = "<|begin_of_text|>";
constexpr char kStartHeader[] = "<|start_header_id|>";
constexpr char kEndHeader[] = "<|end_header_id|>";
constexpr char kEotId[] = "<|eot_id|>";
constexpr char kThinkOpen[] = "<think>";
constexpr char kThinkClose[] = "</think>";
constexpr char kGemmaBos[] = "<bos>";
constexpr char kStartOfTurn[] = "<start_of_turn>";
constexpr char kEndOfTurn[] = "<end_of_turn>";
constexpr char kMistralBos[] = "<s>";
constexpr char kMistralEos[] = "</s>";
constexpr char kInst[] = "[INST]";

// Undoes the escapes of a Jinja (Python-like) string literal body.
std::string UnescapeJinja(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out.push_back(s[i]);
      continue;
    }
    char c = s[++i];
    switch (c) {
      case 'n':
        out.push_back('\n');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case '\\':
      case '\'':
      case '"':
        out.push_back(c);
        break;
      default:
        out.push_back('\\');
        out.push_back(c);
        break;
    }
  }
  return out;
}

// Finds a string literal of the form '<header><sep><text><footer>...' and
// returns <text>: the system prompt a template injects when the
// conversation brings none. `sep` may appear escaped ("\n" as backslash-n)
// or raw. Literals that end before the footer (the template concatenates
// the caller's system message there) do not count.
std::string FindDefaultSystemPrompt(std::string_view src,
                                    std::string_view header,
                                    std::string_view sep,
                                    std::string_view footer) {
  std::string escaped_sep;
  for (char c : sep) {
    if (c == '\n') {
      escaped_sep += "\\n";
    } else {
      escaped_sep += c;
    }
  }
  for (size_t at = src.find(header); at != std::string_view::npos;
       at = src.find(header, at + 1)) {
    if (at == 0) continue;
    const char quote = src[at - 1];
    if (quote != '\'' && quote != '"') continue;
    std::string_view rest = src.substr(at + header.size());
    if (rest.starts_with(escaped_sep)) {
      rest.remove_prefix(escaped_sep.size());
    } else if (rest.starts_with(sep)) {
      rest.remove_prefix(sep.size());
    } else {
      continue;
    }
    // Scan the literal's body up to its closing quote.
    for (size_t i = 0; i < rest.size(); ++i) {
      if (rest[i] == '\\') {
        ++i;
        continue;
      }
      if (rest[i] == quote) break;
      if (rest.substr(i, footer.size()) == footer) {
        return UnescapeJinja(rest.substr(0, i));
      }
    }
  }
  return "";
}

// Python's str.isspace() code points.
bool IsPythonSpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) ||
         cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Length of the whitespace character starting at s[i], 0 if none (invalid
// UTF-8 is never whitespace).
size_t SpaceAt(std::string_view s, size_t i) {
  auto b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) return IsPythonSpace(b) ? 1 : 0;
  size_t len = (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : 0;  // no 4-byte spaces
  if (len == 0 || i + len > s.size()) return 0;
  uint32_t cp = b & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    auto c = static_cast<uint8_t>(s[i + k]);
    if ((c & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (c & 0x3F);
  }
  return IsPythonSpace(cp) ? len : 0;
}

// Jinja's `trim` filter: Python's str.strip() (Unicode whitespace).
std::string_view PythonStrip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    size_t len = SpaceAt(s, begin);
    if (len == 0) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    // Find the start of the last character.
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80 &&
           end - start < 4) {
      --start;
    }
    if (SpaceAt(s, start) != end - start) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

std::string_view StripNewlines(std::string_view s, bool left, bool right) {
  while (left && !s.empty() && s.front() == '\n') s.remove_prefix(1);
  while (right && !s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}

// An assistant message as Qwen3's template renders it: the reasoning is the
// text before the first </think> (after its <think>), the answer the text
// after the last one. The block is written out only after the last user
// message (`after_query`), and there for the last message or where there is
// reasoning.
template <typename Text, typename Content>
void RenderQwen3Assistant(std::string_view m, bool after_query, bool last,
                          Text& text, Content& content) {
  std::string_view reasoning, answer = m;
  if (const size_t close = m.find(kThinkClose); close != m.npos) {
    reasoning = StripNewlines(m.substr(0, close), false, true);
    if (const size_t open = reasoning.rfind(kThinkOpen);
        open != reasoning.npos) {
      reasoning.remove_prefix(open + std::string_view(kThinkOpen).size());
    }
    reasoning = StripNewlines(reasoning, true, false);
    answer = StripNewlines(
        m.substr(m.rfind(kThinkClose) + std::string_view(kThinkClose).size()),
        true, false);
  }
  text(absl::StrCat(kImStart, "assistant\n"));
  if (after_query && (last || !reasoning.empty())) {
    text(absl::StrCat(kThinkOpen, "\n"));
    content(StripNewlines(reasoning, true, true));
    text(absl::StrCat("\n", kThinkClose, "\n\n"));
  }
  content(answer);
  text(absl::StrCat(kImEnd, "\n"));
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Detect(
    std::string_view jinja_source) {
  ChatTemplate t;
  if (jinja_source.find(kImStart) != std::string_view::npos) {
    t.kind_ = jinja_source.find(kThinkClose) != std::string_view::npos
                  ? ChatTemplateKind::kQwen3
                  : ChatTemplateKind::kChatMl;
    t.default_system_prompt_ = FindDefaultSystemPrompt(
        jinja_source, absl::StrCat(kImStart, "system"), "\n", kImEnd);
    return t;
  }
  if (jinja_source.find(kStartHeader) != std::string_view::npos) {
    t.kind_ = ChatTemplateKind::kLlama3;
    t.default_system_prompt_ = FindDefaultSystemPrompt(
        jinja_source, absl::StrCat(kStartHeader, "system", kEndHeader), "\n\n",
        kEotId);
    return t;
  }
  if (jinja_source.find(kStartOfTurn) != std::string_view::npos) {
    t.kind_ = ChatTemplateKind::kGemma;
    return t;
  }
  // Only the v1 template quotes " [INST] " with a leading space; Llama 2's
  // (<<SYS>>) and Mistral's other versions space it differently.
  auto has = [jinja_source](std::string_view s) {
    return jinja_source.find(s) != std::string_view::npos;
  };
  if ((has("' [INST] '") || has("\" [INST] \"")) && !has("<<SYS>>")) {
    t.kind_ = ChatTemplateKind::kMistral;
    return t;
  }
  return absl::InvalidArgumentError(
      "unrecognised chat template (none of ChatML, Llama 3, Gemma, Mistral "
      "v1); pick one by name with the chat template override");
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromName(std::string_view name) {
  ChatTemplate t;
  if (name == "chatml") {
    t.kind_ = ChatTemplateKind::kChatMl;
  } else if (name == "qwen3") {
    t.kind_ = ChatTemplateKind::kQwen3;
  } else if (name == "llama3") {
    t.kind_ = ChatTemplateKind::kLlama3;
  } else if (name == "gemma") {
    t.kind_ = ChatTemplateKind::kGemma;
  } else if (name == "mistral") {
    t.kind_ = ChatTemplateKind::kMistral;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown chat template '", Sv(name),
                     "' (known: chatml, qwen3, llama3, gemma, mistral)"));
  }
  return t;
}

std::string_view ChatTemplate::name() const {
  switch (kind_) {
    case ChatTemplateKind::kChatMl:
      return "chatml";
    case ChatTemplateKind::kQwen3:
      return "qwen3";
    case ChatTemplateKind::kGemma:
      return "gemma";
    case ChatTemplateKind::kMistral:
      return "mistral";
    case ChatTemplateKind::kLlama3:
      break;
  }
  return "llama3";
}

std::string_view ChatTemplate::end_of_turn() const {
  switch (kind_) {
    case ChatTemplateKind::kLlama3:
      return kEotId;
    case ChatTemplateKind::kGemma:
      return kEndOfTurn;
    case ChatTemplateKind::kMistral:
      return kMistralEos;
    case ChatTemplateKind::kChatMl:
    case ChatTemplateKind::kQwen3:
      break;
  }
  return kImEnd;
}

std::string_view ChatTemplate::turn_separator() const {
  return kind_ == ChatTemplateKind::kLlama3 ||
                 kind_ == ChatTemplateKind::kMistral
             ? ""
             : "\n";
}

std::vector<ChatSegment> ChatTemplate::RenderSegments(
    std::span<const ChatMessage> messages, bool add_generation_prompt,
    bool first_turn) const {
  // The templates inject their default system prompt inside the message
  // loop, so an empty conversation gets none.
  std::optional<ChatMessage> default_system;
  if (first_turn && !messages.empty() && messages[0].role != "system" &&
      !default_system_prompt_.empty()) {
    default_system = ChatMessage{"system", default_system_prompt_};
  }
  std::vector<ChatSegment> out;
  auto text = [&](std::string t) {
    if (t.empty()) return;
    if (!out.empty() && !out.back().is_content) {
      out.back().text += t;
    } else {
      out.push_back({std::move(t), false});
    }
  };
  auto content = [&](std::string_view c) {
    if (!c.empty()) out.push_back({std::string(c), true});
  };
  bool first = first_turn;
  // Qwen3 keeps thinking blocks only after the last user message.
  size_t last_user = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == "user") last_user = i;
  }
  size_t index = 0;
  // Gemma and Mistral open with BOS outside the message loop and fold a
  // leading system message into the message after it.
  const bool gemma = kind_ == ChatTemplateKind::kGemma;
  const bool mistral = kind_ == ChatTemplateKind::kMistral;
  if (first_turn && gemma) text(kGemmaBos);
  if (first_turn && mistral) text(kMistralBos);
  std::optional<std::string_view> system_prefix;
  size_t rendered = 0;  // messages seen, the default system prompt included
  auto render_folding = [&](const ChatMessage& m) {
    if (first_turn && rendered == 0 && m.role == "system") {
      system_prefix = m.content;
      return;
    }
    // The template's loop.first, which a continuation never has.
    const bool loop_first =
        first_turn && rendered == (system_prefix.has_value() ? 1 : 0);
    auto prefix = [&] {
      if (loop_first && system_prefix.has_value()) {
        content(*system_prefix);
        text("\n\n");
      }
    };
    if (gemma) {
      text(absl::StrCat(kStartOfTurn, m.role == "assistant" ? "model" : m.role,
                        "\n"));
      prefix();
      content(PythonStrip(m.content));
      text(absl::StrCat(kEndOfTurn, "\n"));
    } else if (m.role == "assistant") {
      text(" ");
      content(m.content);
      text(kMistralEos);
    } else {
      text(absl::StrCat(" ", kInst, " "));
      prefix();
      content(m.content);
      text(" [/INST]");
    }
  };
  auto render_one = [&](const ChatMessage& m) {
    if (gemma || mistral) {
      render_folding(m);
      ++rendered;
    } else if (kind_ == ChatTemplateKind::kQwen3 && m.role == "assistant") {
      RenderQwen3Assistant(m.content, index > last_user,
                           index + 1 == messages.size(), text, content);
    } else if (kind_ != ChatTemplateKind::kLlama3) {
      text(absl::StrCat(kImStart, m.role, "\n"));
      content(m.content);
      text(absl::StrCat(kImEnd, "\n"));
    } else {
      if (first) text(kBeginOfText);
      text(absl::StrCat(kStartHeader, m.role, kEndHeader, "\n\n"));
      content(PythonStrip(m.content));
      text(kEotId);
    }
    first = false;
  };
  if (default_system) render_one(*default_system);
  for (const ChatMessage& m : messages) {
    render_one(m);
    ++index;
  }
  // Mistral has no generation prompt: the answer follows " [/INST]".
  if (add_generation_prompt && !mistral) {
    if (gemma) {
      text(absl::StrCat(kStartOfTurn, "model\n"));
    } else if (kind_ != ChatTemplateKind::kLlama3) {
      text(absl::StrCat(kImStart, "assistant\n"));
    } else {
      text(absl::StrCat(kStartHeader, "assistant", kEndHeader, "\n\n"));
    }
  }
  return out;
}

std::string ChatTemplate::Render(std::span<const ChatMessage> messages,
                                 bool add_generation_prompt) const {
  std::string out;
  for (const ChatSegment& s : RenderSegments(messages, add_generation_prompt)) {
    out += s.text;
  }
  return out;
}

}  // namespace kvsession::runtime
