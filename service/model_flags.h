// The flags every executable that loads a model shares, defined once.
#ifndef KVSESSION_SERVICE_MODEL_FLAGS_H_
#define KVSESSION_SERVICE_MODEL_FLAGS_H_

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "runtime/model_bundle.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(std::string, chat_template);
ABSL_DECLARE_FLAG(bool, default_system_prompt);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(int32_t, cuda_device);
ABSL_DECLARE_FLAG(int32_t, gemm_columns);
ABSL_DECLARE_FLAG(bool, cuda_graphs);

namespace kvsession::service {

// ModelBundle options from --model, --threads, --chat_template,
// --default_system_prompt, --device, --cuda_device, --gemm_columns and
// --cuda_graphs.
runtime::ModelBundle::Options ModelOptionsFromFlags();

}  // namespace kvsession::service

#endif  // KVSESSION_SERVICE_MODEL_FLAGS_H_
