// GgufWriter: serializes metadata and tensors in GGUF v3 (tests and tools
// write models with it).
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "runtime/gguf.h"
#include "runtime/gguf_internal.h"

namespace kvsession::runtime {

using gguf_internal::Err;
using gguf_internal::IsPowerOfTwo;
using gguf_internal::kAlignmentKey;
using gguf_internal::kDefaultAlignment;
using gguf_internal::kMagic;
using gguf_internal::kWriteVersion;
using gguf_internal::Quote;
using gguf_internal::ShapeBytes;
using gguf_internal::ToUint;

namespace {

template <typename T>
void Put(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

void PutString(std::string& out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out.append(s.data(), s.size());
}

void PadTo(std::string& out, uint64_t alignment) {
  out.append((alignment - out.size() % alignment) % alignment, '\0');
}

// Writes the payload of `v` as `type` (an array's element type is
// authoritative for its elements, whatever their own `type` says).
void PutValueBody(std::string& out, GgufValueType type, const GgufValue& v) {
  using T = GgufValueType;
  // One line per type reads as a table.
  // clang-format off
  switch (type) {
    case T::kUint8:   return Put(out, static_cast<uint8_t>(v.u));
    case T::kInt8:    return Put(out, static_cast<int8_t>(v.i));
    case T::kUint16:  return Put(out, static_cast<uint16_t>(v.u));
    case T::kInt16:   return Put(out, static_cast<int16_t>(v.i));
    case T::kUint32:  return Put(out, static_cast<uint32_t>(v.u));
    case T::kInt32:   return Put(out, static_cast<int32_t>(v.i));
    case T::kUint64:  return Put(out, v.u);
    case T::kInt64:   return Put(out, v.i);
    case T::kFloat32: return Put(out, static_cast<float>(v.f));
    case T::kFloat64: return Put(out, v.f);
    case T::kBool:    return Put<uint8_t>(out, v.u != 0 ? 1 : 0);
    case T::kString:  return PutString(out, v.s);
    case T::kArray:   break;
  }
  // clang-format on
  Put(out, static_cast<uint32_t>(v.array_type));
  Put<uint64_t>(out, v.array.size());
  for (const GgufValue& e : v.array) PutValueBody(out, v.array_type, e);
}

// A value of `type` with `field` set to `v`.
template <typename Field, typename V>
GgufValue Make(GgufValueType type, Field GgufValue::*field, V&& v) {
  GgufValue out;
  out.type = type;
  out.*field = static_cast<Field>(std::forward<V>(v));
  return out;
}

// An array of `elem_type` whose elements have `field` taken from `items`.
template <typename Field, typename V>
GgufValue MakeArray(GgufValueType elem_type, Field GgufValue::*field,
                    std::vector<V>& items) {
  GgufValue out =
      Make(GgufValueType::kArray, &GgufValue::array_type, elem_type);
  out.array.reserve(items.size());
  for (V& item : items) {
    out.array.push_back(Make(elem_type, field, std::move(item)));
  }
  return out;
}

}  // namespace

void GgufWriter::AddUint32(std::string key, uint32_t v) {
  AddValue(std::move(key), Make(GgufValueType::kUint32, &GgufValue::u, v));
}

void GgufWriter::AddInt32(std::string key, int32_t v) {
  AddValue(std::move(key), Make(GgufValueType::kInt32, &GgufValue::i, v));
}

void GgufWriter::AddUint64(std::string key, uint64_t v) {
  AddValue(std::move(key), Make(GgufValueType::kUint64, &GgufValue::u, v));
}

void GgufWriter::AddFloat32(std::string key, float v) {
  AddValue(std::move(key), Make(GgufValueType::kFloat32, &GgufValue::f, v));
}

void GgufWriter::AddBool(std::string key, bool v) {
  AddValue(std::move(key),
           Make(GgufValueType::kBool, &GgufValue::u, v ? 1 : 0));
}

void GgufWriter::AddString(std::string key, std::string v) {
  AddValue(std::move(key),
           Make(GgufValueType::kString, &GgufValue::s, std::move(v)));
}

void GgufWriter::AddStringArray(std::string key, std::vector<std::string> v) {
  AddValue(std::move(key), MakeArray(GgufValueType::kString, &GgufValue::s, v));
}

void GgufWriter::AddInt32Array(std::string key, std::vector<int32_t> v) {
  AddValue(std::move(key), MakeArray(GgufValueType::kInt32, &GgufValue::i, v));
}

void GgufWriter::AddFloat32Array(std::string key, std::vector<float> v) {
  AddValue(std::move(key),
           MakeArray(GgufValueType::kFloat32, &GgufValue::f, v));
}

void GgufWriter::AddValue(std::string key, GgufValue v) {
  uint64_t a = 0;
  if (key == kAlignmentKey && ToUint(v, &a)) alignment_ = a;
  for (auto& [k, existing] : kv_) {
    if (k == key) {
      existing = std::move(v);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(v));
}

absl::Status GgufWriter::AddTensor(std::string name, kernels::GgmlType type,
                                   std::vector<int64_t> dims,
                                   std::string data) {
  const std::string q = Quote(name);
  absl::StatusOr<uint64_t> n_bytes =
      ShapeBytes(static_cast<uint32_t>(type), dims);
  if (!n_bytes.ok()) {
    return Err("gguf writer: tensor ", q, ": ", n_bytes.status().message());
  }
  if (*n_bytes != data.size()) {
    return Err("gguf writer: tensor ", q, ": ", data.size(),
               " data bytes, want ", *n_bytes);
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) return Err("gguf writer: duplicate tensor name ", q);
  }
  tensors_.push_back({std::move(name), type, std::move(dims), std::move(data)});
  return absl::OkStatus();
}

std::string GgufWriter::Serialize() const {
  KVS_CHECK(IsPowerOfTwo(alignment_) &&
            alignment_ <= std::numeric_limits<uint32_t>::max())
      << "gguf writer: alignment " << alignment_
      << " is not a power of two that fits uint32";
  // The alignment key always states alignment_: it replaces a value added
  // under that key and is appended when the alignment is not the default.
  bool has_alignment_key = false;
  for (const auto& [key, v] : kv_) has_alignment_key |= key == kAlignmentKey;
  const bool add_alignment_key =
      !has_alignment_key && alignment_ != kDefaultAlignment;

  std::string out(kMagic, sizeof(kMagic));
  Put(out, kWriteVersion);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, kv_.size() + (add_alignment_key ? 1 : 0));
  const GgufValue alignment_value =
      Make(GgufValueType::kUint32, &GgufValue::u, alignment_);
  for (const auto& [key, v] : kv_) {
    const GgufValue* value = key == kAlignmentKey ? &alignment_value : &v;
    PutString(out, key);
    Put(out, static_cast<uint32_t>(value->type));
    PutValueBody(out, value->type, *value);
  }
  if (add_alignment_key) {
    PutString(out, kAlignmentKey);
    Put(out, static_cast<uint32_t>(GgufValueType::kUint32));
    PutValueBody(out, GgufValueType::kUint32, alignment_value);
  }

  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(out, t.name);
    Put(out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put(out, static_cast<uint64_t>(d));
    Put(out, static_cast<uint32_t>(t.type));
    Put(out, offset);
    offset += t.data.size();
    offset += (alignment_ - offset % alignment_) % alignment_;
  }
  PadTo(out, alignment_);
  for (const Tensor& t : tensors_) {
    out.append(t.data);
    PadTo(out, alignment_);
  }
  return out;
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  const std::string bytes = Serialize();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    return absl::InternalError(
        absl::StrCat("gguf writer: cannot write '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace kvsession::runtime
