// Everything loaded from one GGUF file: the mapping, a backend, the model,
// the tokenizer and the chat template.
#ifndef KVSESSION_RUNTIME_MODEL_BUNDLE_H_
#define KVSESSION_RUNTIME_MODEL_BUNDLE_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/chat_template.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

namespace kvsession::runtime {

struct ModelBundle {
  struct Options {
    std::string path;
    int n_threads = 0;          // CPU backend threads; 0: all cores
    // Backend: "cpu", "cuda" or "auto" (kernels/backend_factory.h).
    std::string device = "cpu";
    int cuda_device = 0;
    int32_t gemm_columns = 64;  // CUDA: tokens per GEMM
    bool cuda_graphs = true;    // CUDA: replay decode steps as graphs
    std::string chat_template;  // "": recognise from the file
    // Insert the template's default system prompt when a conversation has
    // no system message. Off by default: on the default 4-bit model it
    // derails simple questions (docs/architecture.md, "Chat template").
    bool default_system_prompt = false;
  };
  static absl::StatusOr<std::unique_ptr<ModelBundle>> Load(
      const Options& options);

  // Renders messages with the chat template and encodes them (control tokens
  // of the template are parsed; user text is not: a user typing
  // "<|im_end|>" gets plain text tokens). FAILED_PRECONDITION without a
  // template.
  // first_turn=false encodes messages that continue a conversation (no
  // default system prompt).
  absl::StatusOr<std::vector<int32_t>> EncodeChat(
      std::span<const ChatMessage> messages, bool add_generation_prompt,
      bool first_turn = true) const;

  std::unique_ptr<GgufFile> file;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat_template;
  // Tokens that close an assistant turn cut short (end_of_turn + separator)
  // and that follow a turn that ended with its end-of-turn token.
  std::vector<int32_t> close_turn_tokens;
  std::vector<int32_t> turn_separator_tokens;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_MODEL_BUNDLE_H_
