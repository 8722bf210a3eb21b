#include "service/model_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "", "Path of a GGUF model file");
ABSL_FLAG(int32_t, threads, 0, "CPU threads for the model; 0 is all cores");
ABSL_FLAG(std::string, chat_template, "",
          "Override the chat template: chatml, qwen3, llama3, gemma or "
          "mistral (Mistral Instruct v0.1/v0.2 \"v1\")");
ABSL_FLAG(std::string, device, "auto",
          "Compute backend: auto (CUDA when a GPU and the CUDA module are "
          "present, else the CPU), cpu or cuda");
ABSL_FLAG(int32_t, cuda_device, 0, "CUDA device ordinal");
ABSL_FLAG(int32_t, gemm_columns, 64,
          "CUDA: tokens per weight GEMM (every GEMM has this shape, which "
          "keeps results batch invariant)");
ABSL_FLAG(bool, cuda_graphs, true,
          "CUDA: record decode steps as CUDA graphs and replay them");
ABSL_FLAG(bool, default_system_prompt, false,
          "Insert the chat template's default system prompt when a "
          "conversation has no system message");

namespace kvsession::service {

runtime::ModelBundle::Options ModelOptionsFromFlags() {
  runtime::ModelBundle::Options o;
  o.path = absl::GetFlag(FLAGS_model);
  o.n_threads = absl::GetFlag(FLAGS_threads);
  o.chat_template = absl::GetFlag(FLAGS_chat_template);
  o.device = absl::GetFlag(FLAGS_device);
  o.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  o.gemm_columns = absl::GetFlag(FLAGS_gemm_columns);
  o.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  o.default_system_prompt = absl::GetFlag(FLAGS_default_system_prompt);
  return o;
}

}  // namespace kvsession::service
