// Helpers of the GPU parity tests: skip without a device, move vectors to
// and from device memory, compare with a stated tolerance.
#ifndef KVSESSION_TESTS_KERNELS_CUDA_GPU_TEST_UTIL_H_
#define KVSESSION_TESTS_KERNELS_CUDA_GPU_TEST_UTIL_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvsession::testing {

// True when a CUDA device can be used (checked once).
bool HaveGpu();

#define KVS_REQUIRE_GPU()                                   \
  do {                                                      \
    if (!::kvsession::testing::HaveGpu()) {                 \
      GTEST_SKIP() << "no CUDA device";                     \
    }                                                       \
  } while (0)

// Owns a device allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) {
    o.p_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return p_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
DeviceBuffer ToDevice(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  if (!v.empty()) {
    EXPECT_EQ(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T),
                         cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  return b;
}

template <typename T>
std::vector<T> ToHost(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (n > 0) {
    EXPECT_EQ(cudaMemcpy(v.data(), b.get(), n * sizeof(T),
                         cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return v;
}

// Largest |a - b| / (atol + rtol * |b|); <= 1 passes. Names the worst index
// in `where`.
double ToleranceRatio(const std::vector<float>& a, const std::vector<float>& b,
                      double atol, double rtol, std::string* where);

}  // namespace kvsession::testing

#endif  // KVSESSION_TESTS_KERNELS_CUDA_GPU_TEST_UTIL_H_
