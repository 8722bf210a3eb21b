// The CUDA backend as a loadable module: kernels/backend_factory.cc finds
// this entry point with dlsym.
#include <cstdio>

#include "kernels/backend_factory.h"
#include "kernels/cuda/cuda_backend.h"

extern "C" __attribute__((visibility("default")))
kvsession::kernels::Backend* KvsessionCreateCudaBackend(
    const kvsession::kernels::CudaModuleOptions* options, char* error,
    int error_len) {
  kvsession::kernels::cuda::CudaBackend::Options o;
  o.device = options->device;
  o.gemm_columns = options->gemm_columns;
  o.graphs = options->graphs != 0;
  auto b = kvsession::kernels::cuda::CudaBackend::Create(o);
  if (!b.ok()) {
    std::snprintf(error, static_cast<size_t>(error_len), "%s",
                  b.status().ToString().c_str());
    return nullptr;
  }
  return b->release();
}
