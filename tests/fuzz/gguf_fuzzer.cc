// libFuzzer target for the GGUF reader.
//
// Any input must either fail with INVALID_ARGUMENT or parse into a file whose
// tensor bytes are readable and whose re-serialisation parses back to the same
// content (the writer and reader agree on everything the reader accepts).
//
// `gguf_fuzzer --write-seeds DIR` writes a seed corpus of small valid files
// and a dictionary (DIR/../gguf.dict) instead of fuzzing.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/check.h"
#include "kernels/ggml_type.h"
#include "runtime/gguf.h"

namespace kvsession::runtime {
namespace {

using T = GgufValueType;

GgufValue Val(T type) {
  GgufValue v;
  v.type = type;
  return v;
}

GgufValue Arr(T elem_type, std::vector<GgufValue> elems) {
  GgufValue v = Val(T::kArray);
  v.array_type = elem_type;
  v.array = std::move(elems);
  return v;
}

// Rebuilds `f` with the writer: same keys in the same order, same tensors.
std::string Reserialize(const GgufFile& f) {
  GgufWriter w;
  w.set_alignment(f.alignment());
  for (const auto& [key, value] : f.metadata()) w.AddValue(key, value);
  for (const GgufTensorInfo& t : f.tensors()) {
    KVS_CHECK_OK(
        w.AddTensor(t.name, t.type, t.dims,
                    std::string(static_cast<const char*>(t.data), t.n_bytes)));
  }
  return w.Serialize();
}

// Exercises the getters on every key; they may fail but never crash.
void TouchGetters(const GgufFile& f) {
  for (const auto& [key, value] : f.metadata()) {
    KVS_CHECK(f.Find(key) == &value) << "Find disagrees for a key";
    (void)f.GetString(key);
    (void)f.GetUint(key);
    (void)f.GetInt(key);
    (void)f.GetFloat(key);
    (void)f.GetBool(key);
    (void)f.GetStringArray(key);
    (void)f.GetIntArray(key);
    (void)f.GetFloatArray(key);
  }
}

void FuzzOne(std::string_view bytes) {
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBytes(bytes);
  if (!f.ok()) {
    KVS_CHECK(f.status().code() == absl::StatusCode::kInvalidArgument)
        << f.status();
    return;
  }
  TouchGetters(**f);
  uint8_t sum = 0;  // reads every tensor byte under ASan
  for (const GgufTensorInfo& t : (*f)->tensors()) {
    KVS_CHECK((*f)->FindTensor(t.name) == &t);
    KVS_CHECK(reinterpret_cast<uintptr_t>(t.data) %
                  std::min<uint64_t>((*f)->alignment(), 4096) ==
              0);
    const auto* p = static_cast<const uint8_t*>(t.data);
    for (uint64_t i = 0; i < t.n_bytes; ++i) sum += p[i];
  }
  volatile uint8_t sink = sum;
  (void)sink;

  const std::string once = Reserialize(**f);
  absl::StatusOr<std::unique_ptr<GgufFile>> g = GgufFile::FromBytes(once);
  KVS_CHECK(g.ok()) << "re-serialised file does not parse: " << g.status();
  KVS_CHECK(Reserialize(**g) == once) << "writer/reader round trip differs";
}

// Small valid files that reach every part of the reader.
std::vector<std::pair<std::string, std::string>> Seeds() {
  std::vector<std::pair<std::string, std::string>> seeds;
  {
    GgufWriter w;
    seeds.emplace_back("empty", w.Serialize());
  }
  {
    GgufWriter w;
    const std::vector<T> scalars = {
        T::kUint8,   T::kInt8, T::kUint16, T::kInt16,  T::kUint32, T::kInt32,
        T::kFloat32, T::kBool, T::kString, T::kUint64, T::kInt64,  T::kFloat64};
    for (T t : scalars) {
      GgufValue s = Val(t);
      s.u = 1;
      s.i = -1;
      s.f = 0.5;
      s.s = "str";
      w.AddValue("scalar." + std::to_string(static_cast<int>(t)), s);
      w.AddValue("array." + std::to_string(static_cast<int>(t)),
                 Arr(t, {s, s}));
    }
    w.AddValue("nested", Arr(T::kArray, {Arr(T::kString, {Val(T::kString)}),
                                         Arr(T::kInt32, {})}));
    seeds.emplace_back("values", w.Serialize());
  }
  {
    GgufWriter w;
    w.AddString("general.architecture", "llama");
    w.AddUint32("llama.block_count", 1);
    w.AddStringArray("tokenizer.ggml.tokens", {"a", "b", "ab"});
    w.AddStringArray("tokenizer.ggml.merges", {"a b"});
    w.AddFloat32Array("tokenizer.ggml.scores", {0, -1, -2});
    for (uint32_t raw = 0; raw < 64; ++raw) {
      const kernels::TypeTraits* t = kernels::GetTypeTraits(raw);
      if (t == nullptr) continue;
      const uint64_t n = *kernels::TensorBytes(t->type, t->block_elems * 2);
      KVS_CHECK_OK(w.AddTensor(std::string("t.") + t->name, t->type,
                               {t->block_elems, 2}, std::string(n, '\x5a')));
    }
    seeds.emplace_back("tensors", w.Serialize());
    w.set_alignment(64);
    seeds.emplace_back("tensors_align64", w.Serialize());
  }
  {
    GgufWriter w;
    w.set_alignment(8);
    KVS_CHECK_OK(w.AddTensor("w", kernels::GgmlType::kF32, {2, 1, 1, 2},
                             std::string(16, '\1')));
    seeds.emplace_back("rank4_align8", w.Serialize());
  }
  return seeds;
}

constexpr const char* kDictionary[] = {
    "\"GGUF\"",
    "\"\\x03\\x00\\x00\\x00\"",
    "\"\\x02\\x00\\x00\\x00\"",
    "\"general.alignment\"",
    "\"general.architecture\"",
    "\"\\x09\\x00\\x00\\x00\"",
    "\"\\x08\\x00\\x00\\x00\"",
    "\"\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\"",
    "\"\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x80\"",
};

int WriteSeeds(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  for (const auto& [name, bytes] : Seeds()) {
    std::ofstream(dir / (name + ".gguf"), std::ios::binary) << bytes;
  }
  std::ofstream dict(dir.parent_path() / "gguf.dict");
  for (const char* entry : kDictionary) dict << entry << "\n";
  std::printf("wrote %zu seeds to %s\n", Seeds().size(), dir.c_str());
  return 0;
}

}  // namespace
}  // namespace kvsession::runtime

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  for (int i = 1; i + 1 < *argc; ++i) {
    if (std::strcmp((*argv)[i], "--write-seeds") == 0) {
      std::exit(kvsession::runtime::WriteSeeds((*argv)[i + 1]));
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvsession::runtime::FuzzOne(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
