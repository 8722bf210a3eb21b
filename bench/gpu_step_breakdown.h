// Where a decode step's time goes on the CUDA backend: each op of one layer
// of a model shape at one token, timed on the GPU alone (many repetitions
// recorded in a CUDA graph, so host launch costs do not count), next to the
// time its bytes would take at the device's copy bandwidth.
#ifndef KVSESSION_BENCH_GPU_STEP_BREAKDOWN_H_
#define KVSESSION_BENCH_GPU_STEP_BREAKDOWN_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_backend.h"
#include "runtime/model_config.h"

namespace kvsession::bench {

// Prints a markdown table. `rw_bandwidth` is the device copy rate counting
// read and write bytes (bytes/s).
absl::Status MeasureStepBreakdown(kernels::cuda::CudaBackend& be,
                                  const runtime::ModelConfig& c,
                                  int32_t context, double rw_bandwidth);

}  // namespace kvsession::bench

#endif  // KVSESSION_BENCH_GPU_STEP_BREAKDOWN_H_
