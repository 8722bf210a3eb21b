// Picks and creates the compute backend: the CPU backend, or the CUDA
// backend loaded from its module (libkvsession_cuda.so) with dlopen. Loading
// the module at run time lets one binary run on machines without CUDA and
// keeps cuBLAS's large static TLS away from threads created before it
// (DESIGN.md, "Build facts").
#ifndef KVSESSION_KERNELS_BACKEND_FACTORY_H_
#define KVSESSION_KERNELS_BACKEND_FACTORY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace kvsession::kernels {

struct BackendOptions {
  // "cpu", "cuda", or "auto" (CUDA when the module loads and a device is
  // present, else the CPU).
  std::string device = "cpu";
  int n_threads = 0;  // CPU threads; 0: all cores
  int cuda_device = 0;
  int32_t gemm_columns = 64;  // CUDA: tokens per GEMM (kernels/cuda/gemm.h)
  bool cuda_graphs = true;    // CUDA: replay decode steps as graphs
  // "": next to the executable (../lib/ and ./), then the loader's path.
  std::string cuda_module;
};

// INVALID_ARGUMENT for an unknown device; FAILED_PRECONDITION when "cuda"
// is asked for and the module or the device is missing.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    const BackendOptions& options);

// Why "auto" chose the CPU, or "" (for the start-up log).
std::string LastAutoFallbackReason();

// The module's entry point (extern "C", no C++ types across the boundary
// other than the Backend it returns). Returns null and fills `error` on
// failure.
struct CudaModuleOptions {
  int device;
  int gemm_columns;
  int graphs;  // 0 or 1
};
using CreateCudaBackendFn = Backend* (*)(const CudaModuleOptions* options,
                                         char* error, int error_len);
inline constexpr char kCreateCudaBackendSymbol[] = "KvsessionCreateCudaBackend";
inline constexpr char kCudaModuleName[] = "libkvsession_cuda.so";

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_BACKEND_FACTORY_H_
