// Error handling for CUDA calls. Runtime failures that input or the machine
// can cause (out of memory, no device) travel as absl::Status; a failed
// launch or a sticky device error inside an op is a broken invariant.
#ifndef KVSESSION_KERNELS_CUDA_CUDA_CHECK_H_
#define KVSESSION_KERNELS_CUDA_CUDA_CHECK_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace kvsession::kernels::cuda {

inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  if (e == cudaErrorMemoryAllocation) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": ", cudaGetErrorString(e)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

}  // namespace kvsession::kernels::cuda

#define KVS_CUDA_CHECK(expr)                                          \
  do {                                                                \
    const cudaError_t kvs_err_ = (expr);                              \
    KVS_CHECK(kvs_err_ == cudaSuccess)                                \
        << #expr << ": " << cudaGetErrorString(kvs_err_);             \
  } while (0)

// After a launch: catches bad configurations at once.
#define KVS_CUDA_LAUNCH_CHECK() KVS_CUDA_CHECK(cudaGetLastError())

#define KVS_CUDA_RETURN_IF_ERROR(expr)                                   \
  do {                                                                   \
    const cudaError_t kvs_err_ = (expr);                                 \
    if (kvs_err_ != cudaSuccess) {                                       \
      return ::kvsession::kernels::cuda::CudaStatus(kvs_err_, #expr);    \
    }                                                                    \
  } while (0)

#endif  // KVSESSION_KERNELS_CUDA_CUDA_CHECK_H_
