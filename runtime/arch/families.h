// The families the registry (family.cc) lists, one file each.
#ifndef KVSESSION_RUNTIME_ARCH_FAMILIES_H_
#define KVSESSION_RUNTIME_ARCH_FAMILIES_H_

#include "runtime/arch/family.h"

namespace kvsession::runtime {

const Family& LlamaFamily();   // llama.cc
const Family& Qwen2Family();   // qwen2.cc
const Family& Qwen3Family();   // qwen3.cc
const Family& Gemma3Family();  // gemma3.cc

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_ARCH_FAMILIES_H_
