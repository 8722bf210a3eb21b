// Chat templates: ChatML (SmolLM2, Qwen2.5), Qwen3's ChatML with thinking
// blocks, Llama 3, Gemma 3 and Mistral Instruct, recognised from the
// GGUF's `tokenizer.chat_template` Jinja source. We render in C++ rather than
// embed a Jinja engine: the set of templates is small and the output must be
// byte-stable for prefix caching.
#ifndef KVSESSION_RUNTIME_CHAT_TEMPLATE_H_
#define KVSESSION_RUNTIME_CHAT_TEMPLATE_H_

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kvsession::runtime {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// kQwen3 is ChatML where an assistant message's <think> block is kept only
// after the last user message (earlier ones render without it), as Qwen3's
// template does. Such a conversation is not prefix-stable; a session keeps
// the KV of what the model wrote, so an appended turn never re-renders it.
//
// kGemma is Gemma 3's template (google/gemma-3-*-it): "<bos>" once, then
// "<start_of_turn>{role}\n{content|trim}<end_of_turn>\n" per message with
// "assistant" written "model"; a leading system message is not a turn of
// its own but goes, untrimmed and followed by "\n\n", in front of the next
// message's content. The generation prompt is "<start_of_turn>model\n".
// Gemma 2's template renders the same for conversations without a system
// message (it rejects those).
//
// kMistral is the "v1" template of Mistral-7B-Instruct-v0.1/v0.2 (the one
// with a system prompt; llama.cpp's "mistral-v1"): "<s>" once, a user
// message as " [INST] {content} [/INST]", an assistant one as
// " {content}</s>", a leading system message as "{system}\n\n" in front of
// the first user message (dropped if an assistant message comes first).
// Contents are not trimmed, and there is no generation prompt: the answer
// follows " [/INST]" directly. Roles the template rejects (a later
// "system", "tool") render as user messages.
//
// Both are prefix-stable: a leading system message renders nothing until
// the message after it, and it is only ever placed in front of that one.
// So it must come in the same RenderSegments call as that message: a
// continuation (first_turn=false) cannot fold it into its first turn.
enum class ChatTemplateKind { kChatMl, kQwen3, kLlama3, kGemma, kMistral };

// A piece of rendered text: template text (may hold control tokens) or a
// message's content (never parsed for control tokens).
struct ChatSegment {
  std::string text;
  bool is_content = false;
};

class ChatTemplate {
 public:
  // Recognises the template from its Jinja source; default_system_prompt is
  // taken from the source when the template injects one (SmolLM2 does).
  // Gemma: the source uses <start_of_turn>. Mistral: it writes " [INST] "
  // with the leading space of the v1 template (Llama 2's <<SYS>> template,
  // Mistral's older "[INST] " one and its v3/v7 ones are not recognised).
  static absl::StatusOr<ChatTemplate> Detect(std::string_view jinja_source);
  // "chatml", "qwen3", "llama3", "gemma" or "mistral" (the --chat_template
  // override).
  static absl::StatusOr<ChatTemplate> FromName(std::string_view name);

  ChatTemplateKind kind() const { return kind_; }
  std::string_view name() const;
  const std::string& default_system_prompt() const {
    return default_system_prompt_;
  }
  // Replaces (or, with "", disables) the default system prompt.
  void set_default_system_prompt(std::string prompt) {
    default_system_prompt_ = std::move(prompt);
  }

  // Renders the conversation. When the first message is not a system message
  // and the template has a default system prompt, it is inserted. With
  // add_generation_prompt the assistant header follows. Rendering is
  // prefix-stable: Render(m[0..n]) is a prefix of Render(m[0..n+k]) when
  // add_generation_prompt is false.
  std::string Render(std::span<const ChatMessage> messages,
                     bool add_generation_prompt) const;
  // The same text in segments. first_turn=false renders messages that
  // continue a conversation: no default system prompt, no begin-of-text
  // marker, and (Gemma, Mistral) a system message is not the leading one.
  std::vector<ChatSegment> RenderSegments(std::span<const ChatMessage> messages,
                                          bool add_generation_prompt,
                                          bool first_turn = true) const;
  // Text between an assistant turn's end_of_turn() and the next message
  // ("\n" in ChatML and Gemma, nothing in Llama 3 and Mistral).
  std::string_view turn_separator() const;
  // Text that ends an assistant turn in this template ("<|im_end|>",
  // "<|eot_id|>", "<end_of_turn>", "</s>").
  std::string_view end_of_turn() const;

 private:
  ChatTemplateKind kind_ = ChatTemplateKind::kChatMl;
  std::string default_system_prompt_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_CHAT_TEMPLATE_H_
