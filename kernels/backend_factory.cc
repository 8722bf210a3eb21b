#include "kernels/backend_factory.h"

#include <dlfcn.h>
#include <unistd.h>

#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

namespace kvsession::kernels {
namespace {

std::mutex g_mu;
std::string g_fallback;

std::string ExeDir() {
  std::string buf(4096, '\0');
  const ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return "";
  buf.resize(static_cast<size_t>(n));
  const size_t slash = buf.rfind('/');
  return slash == std::string::npos ? "" : buf.substr(0, slash);
}

// The module stays loaded for the life of the process: backends it made
// run its code until exit.
absl::StatusOr<CreateCudaBackendFn> LoadModule(const std::string& path) {
  static std::mutex mu;
  static CreateCudaBackendFn fn = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (fn != nullptr) return fn;
  std::vector<std::string> candidates;
  if (!path.empty()) {
    candidates.push_back(path);
  } else {
    const std::string dir = ExeDir();
    if (!dir.empty()) {
      candidates.push_back(absl::StrCat(dir, "/../lib/", kCudaModuleName));
      candidates.push_back(absl::StrCat(dir, "/", kCudaModuleName));
    }
    candidates.push_back(kCudaModuleName);
  }
  std::string errors;
  for (const std::string& c : candidates) {
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* e = dlerror();
      absl::StrAppend(&errors, errors.empty() ? "" : "; ", e ? e : c);
      continue;
    }
    auto* sym = reinterpret_cast<CreateCudaBackendFn>(
        dlsym(h, kCreateCudaBackendSymbol));
    if (sym == nullptr) {
      absl::StrAppend(&errors, errors.empty() ? "" : "; ", c, ": no entry point");
      dlclose(h);
      continue;
    }
    fn = sym;
    return fn;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("cannot load the CUDA module: ", errors));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCuda(
    const BackendOptions& options) {
  absl::StatusOr<CreateCudaBackendFn> fn = LoadModule(options.cuda_module);
  if (!fn.ok()) return fn.status();
  CudaModuleOptions mo{options.cuda_device, options.gemm_columns,
                       options.cuda_graphs ? 1 : 0};
  char error[512] = {0};
  Backend* b = (*fn)(&mo, error, sizeof error);
  if (b == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda backend: ", error));
  }
  return std::unique_ptr<Backend>(b);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(
    const BackendOptions& options) {
  if (options.device == "cpu") {
    CpuBackend::Options co;
    co.n_threads = options.n_threads;
    return std::make_unique<CpuBackend>(co);
  }
  if (options.device == "cuda") return CreateCuda(options);
  if (options.device == "auto") {
    absl::StatusOr<std::unique_ptr<Backend>> b = CreateCuda(options);
    if (b.ok()) return b;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      g_fallback = b.status().ToString();
    }
    BackendOptions cpu = options;
    cpu.device = "cpu";
    return CreateBackend(cpu);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown device '", options.device, "' (auto, cpu or cuda)"));
}

std::string LastAutoFallbackReason() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_fallback;
}

}  // namespace kvsession::kernels
