// GGUF v2/v3 reader (memory-mapped) and writer.
//
// The reader validates everything before it is used: magic, version, counts,
// string and array lengths, tensor dimensions, types, alignment and data
// ranges (with overflow checks). A malformed file yields an absl::Status that
// names the problem; nothing reads outside the mapped bytes.
#ifndef KVSESSION_RUNTIME_GGUF_H_
#define KVSESSION_RUNTIME_GGUF_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ggml_type.h"

namespace kvsession::runtime {

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// One metadata value. Scalars are widened into the matching member; arrays
// hold their element type and elements (arrays may nest).
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  uint64_t u = 0;  // unsigned integers and bool
  int64_t i = 0;   // signed integers
  double f = 0;    // floats
  std::string s;   // kString
  GgufValueType array_type = GgufValueType::kUint8;  // kArray
  std::vector<GgufValue> array;                       // kArray
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: dims[0] is the contiguous one
  kernels::GgmlType type = kernels::GgmlType::kF32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t n_bytes = 0;
  // Inside the mapping; aligned to the file's alignment (up to 4096 bytes).
  const void* data = nullptr;

  int64_t NumElements() const;
};

class GgufFile {
 public:
  // Maps `path` read-only and parses it.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory copy of `bytes` (fuzzing, tests).
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBytes(
      std::string_view bytes);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const {
    return metadata_;
  }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  const GgufValue* Find(std::string_view key) const;  // null if absent
  const GgufTensorInfo* FindTensor(std::string_view name) const;

  // Typed getters: NOT_FOUND if absent, INVALID_ARGUMENT on a type mismatch
  // (any integer type converts to the requested width if it fits).
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<uint64_t> GetUint(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;  // any float
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(
      std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  absl::StatusOr<std::vector<double>> GetFloatArray(std::string_view key) const;

 private:
  GgufFile() = default;
  absl::Status Parse(const uint8_t* data, uint64_t size);

  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> key_index_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
  // Backing bytes: an mmap (Open) or an owned page-aligned buffer
  // (FromBytes), so tensor data pointers are aligned either way.
  void* map_ = nullptr;
  uint64_t map_size_ = 0;
  void* owned_ = nullptr;
};

// Builds GGUF v3 files: tests and tools write small models with it.
class GgufWriter {
 public:
  void AddUint32(std::string key, uint32_t v);
  void AddInt32(std::string key, int32_t v);
  void AddUint64(std::string key, uint64_t v);
  void AddFloat32(std::string key, float v);
  void AddBool(std::string key, bool v);
  void AddString(std::string key, std::string v);
  void AddStringArray(std::string key, std::vector<std::string> v);
  void AddInt32Array(std::string key, std::vector<int32_t> v);
  void AddFloat32Array(std::string key, std::vector<float> v);
  // Any value, nested arrays too. Adding a key again replaces its value. An
  // integer "general.alignment" sets the alignment. Serialize writes that key
  // as a uint32 holding the alignment in use, wherever it was added, and
  // appends it when it was not added but the alignment is not the default.
  void AddValue(std::string key, GgufValue v);
  // `data` holds the tensor's bytes in `type` (size must match dims).
  absl::Status AddTensor(std::string name, kernels::GgmlType type,
                         std::vector<int64_t> dims, std::string data);
  // Must be a power of two that fits uint32 (checked by Serialize).
  void set_alignment(uint64_t a) { alignment_ = a; }

  std::string Serialize() const;
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    kernels::GgmlType type;
    std::vector<int64_t> dims;
    std::string data;
  };
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace kvsession::runtime

#endif  // KVSESSION_RUNTIME_GGUF_H_
