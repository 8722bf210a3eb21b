// Marks small functions that CPU code and CUDA kernels share (one definition
// for both, so the bits they compute cannot drift apart).
#ifndef KVSESSION_KERNELS_HOST_DEVICE_H_
#define KVSESSION_KERNELS_HOST_DEVICE_H_

#if defined(__CUDACC__)
#define KVS_HOST_DEVICE __host__ __device__
#else
#define KVS_HOST_DEVICE
#endif

#endif  // KVSESSION_KERNELS_HOST_DEVICE_H_
