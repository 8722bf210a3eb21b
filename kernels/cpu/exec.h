// Execution settings every CPU op receives (the CPU analogue of a stream).
#ifndef KVSESSION_KERNELS_CPU_EXEC_H_
#define KVSESSION_KERNELS_CPU_EXEC_H_

namespace kvsession::kernels {

struct CpuExec {
  int n_threads = 1;  // OpenMP threads an op may use
};

}  // namespace kvsession::kernels

#endif  // KVSESSION_KERNELS_CPU_EXEC_H_
