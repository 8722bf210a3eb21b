#include "runtime/model_bundle.h"

#include "kernels/backend_factory.h"

namespace kvsession::runtime {

absl::StatusOr<std::unique_ptr<ModelBundle>> ModelBundle::Load(
    const Options& options) {
  auto b = std::make_unique<ModelBundle>();
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::Open(options.path);
  if (!file.ok()) return file.status();
  b->file = *std::move(file);
  kernels::BackendOptions bo;
  bo.device = options.device;
  bo.n_threads = options.n_threads;
  bo.cuda_device = options.cuda_device;
  bo.gemm_columns = options.gemm_columns;
  bo.cuda_graphs = options.cuda_graphs;
  absl::StatusOr<std::unique_ptr<kernels::Backend>> backend =
      kernels::CreateBackend(bo);
  if (!backend.ok()) return backend.status();
  b->backend = *std::move(backend);
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::Load(*b->file, b->backend.get());
  if (!model.ok()) return model.status();
  b->model = *std::move(model);
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromGguf(*b->file);
  if (!tok.ok()) return tok.status();
  b->tokenizer = *std::move(tok);
  if (b->tokenizer->vocab_size() != b->model->config().vocab_size) {
    return absl::InvalidArgumentError(
        "model: tokenizer and embedding vocab sizes differ");
  }
  if (!options.chat_template.empty()) {
    absl::StatusOr<ChatTemplate> t =
        ChatTemplate::FromName(options.chat_template);
    if (!t.ok()) return t.status();
    b->chat_template = *t;
  } else if (absl::StatusOr<std::string> src =
                 b->file->GetString("tokenizer.chat_template");
             src.ok()) {
    if (absl::StatusOr<ChatTemplate> t = ChatTemplate::Detect(*src); t.ok()) {
      b->chat_template = *t;
    }
  } else if (b->model->config().architecture == "gemma3" &&
             b->tokenizer->FindToken("<start_of_turn>").has_value() &&
             b->tokenizer->FindToken("<end_of_turn>").has_value()) {
    // Gemma 3 base files carry no template, but their vocab has the turn
    // tokens of Gemma's instruction format, which chat clients expect.
    b->chat_template = *ChatTemplate::FromName("gemma");
  }
  if (b->chat_template.has_value() && !options.default_system_prompt) {
    b->chat_template->set_default_system_prompt("");
  }
  if (b->chat_template.has_value()) {
    const std::string sep(b->chat_template->turn_separator());
    b->turn_separator_tokens = b->tokenizer->Encode(sep, true);
    b->close_turn_tokens = b->tokenizer->Encode(
        std::string(b->chat_template->end_of_turn()) + sep, true);
  }
  return b;
}

absl::StatusOr<std::vector<int32_t>> ModelBundle::EncodeChat(
    std::span<const ChatMessage> messages, bool add_generation_prompt,
    bool first_turn) const {
  if (!chat_template.has_value()) {
    return absl::FailedPreconditionError(
        "the model has no recognised chat template; pass --chat_template");
  }
  // Template text is encoded with control tokens parsed, message content
  // without, so user text can never smuggle in a control token.
  const std::vector<ChatSegment> segments = chat_template->RenderSegments(
      messages, add_generation_prompt, first_turn);
  std::vector<Tokenizer::TextSegment> text;
  text.reserve(segments.size());
  for (const ChatSegment& s : segments) {
    text.push_back({s.text, /*parse_special=*/!s.is_content});
  }
  return tokenizer->EncodeSegments(text);
}

}  // namespace kvsession::runtime
