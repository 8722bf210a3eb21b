#include "tests/kernels/cuda/gpu_test_util.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace kvsession::testing {

bool HaveGpu() {
  static const bool have = [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  }();
  return have;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  EXPECT_EQ(cudaMalloc(&p_, bytes == 0 ? 16 : bytes), cudaSuccess);
}

DeviceBuffer::~DeviceBuffer() {
  if (p_ != nullptr) cudaFree(p_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (p_ != nullptr) cudaFree(p_);
    p_ = o.p_;
    bytes_ = o.bytes_;
    o.p_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

double ToleranceRatio(const std::vector<float>& a, const std::vector<float>& b,
                      double atol, double rtol, std::string* where) {
  double worst = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double err = std::fabs(double{a[i]} - double{b[i]});
    double r = err / (atol + rtol * std::fabs(double{b[i]}));
    if (std::isnan(a[i]) != std::isnan(b[i])) r = INFINITY;
    if (r > worst) {
      worst = r;
      if (where != nullptr) {
        *where = absl::StrCat("index ", i, ": ", a[i], " vs ", b[i]);
      }
    }
  }
  return worst;
}

}  // namespace kvsession::testing
