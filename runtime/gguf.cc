#include "runtime/gguf.h"
#include "runtime/gguf_internal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <new>
#include <system_error>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kernels/check.h"

// Internal parse errors carry no "gguf: " prefix; Parse() adds it once.
#define GGUF_RETURN_IF_ERROR(expr)               \
  do {                                           \
    absl::Status gguf_status_ = (expr);          \
    if (!gguf_status_.ok()) return gguf_status_; \
  } while (0)

namespace kvsession::runtime {

namespace gguf_internal {

absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

std::string Quote(std::string_view s) {
  return absl::StrCat("'", absl::Utf8SafeCHexEscape(Sv(s)), "'");
}

bool IsPowerOfTwo(uint64_t a) { return a != 0 && (a & (a - 1)) == 0; }

absl::StatusOr<uint64_t> ShapeBytes(uint32_t raw_type,
                                    const std::vector<int64_t>& dims) {
  const kernels::TypeTraits* traits = kernels::GetTypeTraits(raw_type);
  if (traits == nullptr) return Err("unknown tensor type ", raw_type);
  if (dims.size() > kMaxDims) {
    return Err("n_dims ", dims.size(), " exceeds ", kMaxDims);
  }
  int64_t n_elems = 1;
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] <= 0) return Err("dims[", d, "] is ", dims[d]);
    if (__builtin_mul_overflow(n_elems, dims[d], &n_elems)) {
      return Err("element count overflows at dims[", d, "] = ", dims[d]);
    }
  }
  // Rows are whole blocks: kernels never split a block across rows.
  if (!dims.empty() && dims[0] % traits->block_elems != 0) {
    return Err("dims[0] ", dims[0], " is not a multiple of the ", traits->name,
               " block size ", traits->block_elems);
  }
  return kernels::TensorBytes(traits->type, n_elems);
}

}  // namespace gguf_internal

namespace {

using gguf_internal::Err;
using gguf_internal::IsPowerOfTwo;
using gguf_internal::kAlignmentKey;
using gguf_internal::kDefaultAlignment;
using gguf_internal::kMagic;
using gguf_internal::kMaxDims;
using gguf_internal::Quote;
using gguf_internal::ShapeBytes;
using gguf_internal::Sv;
using gguf_internal::ToUint;

// Scalars are copied out with memcpy in host order.
static_assert(std::endian::native == std::endian::little,
              "the GGUF reader assumes a little-endian host");

// Arrays of arrays are legal; the bound keeps recursion shallow.
constexpr int kMaxArrayDepth = 8;
// Each element becomes a ~100-byte GgufValue, so a cap on their total keeps a
// small hostile file from allocating gigabytes. Real vocabularies (256k
// tokens, a handful of arrays each) stay far below it.
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 23;
// Smallest encodings of a kv (key length, value type, u8) and a tensor info
// (name length, n_dims, type, offset), to reject counts before allocating.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
// FromBytes copies into storage with the alignment an mmap would have.
constexpr size_t kOwnedAlignment = 4096;


// Which GgufValue member a value type uses.
enum class Kind : uint8_t {
  kUnsigned,
  kSigned,
  kFloat,
  kBool,
  kString,
  kArray
};

struct ValueTypeInfo {
  const char* name;
  Kind kind;
  // Smallest encoding (a string's length, an array's element type and count),
  // used to reject counts before allocating for them.
  uint64_t min_size;
};

// Indexed by GgufValueType.
constexpr ValueTypeInfo kValueTypes[] = {
    {"uint8", Kind::kUnsigned, 1},  {"int8", Kind::kSigned, 1},
    {"uint16", Kind::kUnsigned, 2}, {"int16", Kind::kSigned, 2},
    {"uint32", Kind::kUnsigned, 4}, {"int32", Kind::kSigned, 4},
    {"float32", Kind::kFloat, 4},   {"bool", Kind::kBool, 1},
    {"string", Kind::kString, 8},   {"array", Kind::kArray, 12},
    {"uint64", Kind::kUnsigned, 8}, {"int64", Kind::kSigned, 8},
    {"float64", Kind::kFloat, 8},
};

bool IsKnownValueType(uint32_t raw) { return raw < std::size(kValueTypes); }

const char* ValueTypeName(GgufValueType t) {
  const auto i = static_cast<uint32_t>(t);
  return IsKnownValueType(i) ? kValueTypes[i].name : "unknown";
}

bool IsKind(GgufValueType t, Kind kind) {
  const auto i = static_cast<uint32_t>(t);
  return IsKnownValueType(i) && kValueTypes[i].kind == kind;
}

bool IsUnsigned(GgufValueType t) { return IsKind(t, Kind::kUnsigned); }
bool IsSigned(GgufValueType t) { return IsKind(t, Kind::kSigned); }
bool IsInteger(GgufValueType t) { return IsUnsigned(t) || IsSigned(t); }
bool IsFloat(GgufValueType t) { return IsKind(t, Kind::kFloat); }

std::string DescribeType(const GgufValue& v) {
  if (v.type != GgufValueType::kArray) return ValueTypeName(v.type);
  return absl::StrCat("array of ", ValueTypeName(v.array_type));
}

// Integer value -> uint64 / int64; false when it does not fit.
}  // namespace

bool gguf_internal::ToUint(const GgufValue& v, uint64_t* out) {
  if (!IsUnsigned(v.type) && !(IsSigned(v.type) && v.i >= 0)) return false;
  *out = IsUnsigned(v.type) ? v.u : static_cast<uint64_t>(v.i);
  return true;
}

namespace {

bool ToInt(const GgufValue& v, int64_t* out) {
  constexpr auto kMax = static_cast<uint64_t>(INT64_MAX);
  if (!IsSigned(v.type) && !(IsUnsigned(v.type) && v.u <= kMax)) return false;
  *out = IsSigned(v.type) ? v.i : static_cast<int64_t>(v.u);
  return true;
}

std::string IntegerToString(const GgufValue& v) {
  return IsSigned(v.type) ? absl::StrCat(v.i) : absl::StrCat(v.u);
}

// Bounds-checked reads over [data, data + size).
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  template <typename T>
  absl::Status Read(T* v, const char* what) {
    if (left() < sizeof(T)) return Truncated(what, sizeof(T));
    std::memcpy(v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  // Reads a little-endian `Raw` and widens it into `*out`.
  template <typename Raw, typename Out>
  absl::Status ReadAs(Out* out, const char* what) {
    Raw raw{};
    GGUF_RETURN_IF_ERROR(Read(&raw, what));
    *out = static_cast<Out>(raw);
    return absl::OkStatus();
  }

  absl::Status ReadString(std::string* s, const char* what) {
    uint64_t n = 0;
    GGUF_RETURN_IF_ERROR(Read(&n, what));
    if (n > left()) {
      return Err(what, ": string length ", n, " exceeds the ", left(),
                 " bytes left at offset ", pos_, " (size ", size_, ")");
    }
    s->assign(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return absl::OkStatus();
  }

  absl::Status Truncated(const char* what, uint64_t need) const {
    return Err("truncated file: ", what, " needs ", need, " bytes at offset ",
               pos_, " but ", left(), " are left (size ", size_, ")");
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

absl::Status ReadValue(Cursor& c, GgufValueType type, int depth,
                       uint64_t* budget, GgufValue* v);

absl::Status ReadArray(Cursor& c, int depth, uint64_t* budget, GgufValue* v) {
  if (depth > kMaxArrayDepth) {
    return Err("arrays nested deeper than ", kMaxArrayDepth, " levels");
  }
  uint32_t raw = 0;
  GGUF_RETURN_IF_ERROR(c.Read(&raw, "array element type"));
  if (!IsKnownValueType(raw)) {
    return Err("unknown array element type ", raw);
  }
  const auto elem_type = static_cast<GgufValueType>(raw);
  uint64_t n = 0;
  GGUF_RETURN_IF_ERROR(c.Read(&n, "array count"));
  if (n > c.left() / kValueTypes[raw].min_size) {
    return Err("array count ", n, " of ", ValueTypeName(elem_type),
               " cannot fit in the ", c.left(), " bytes left");
  }
  if (n > *budget) {
    return Err("metadata arrays hold more than ", kMaxArrayElements,
               " elements in total");
  }
  *budget -= n;
  v->array_type = elem_type;
  v->array.resize(n);
  for (GgufValue& e : v->array) {
    GGUF_RETURN_IF_ERROR(ReadValue(c, elem_type, depth, budget, &e));
  }
  return absl::OkStatus();
}

absl::Status ReadValue(Cursor& c, GgufValueType type, int depth,
                       uint64_t* budget, GgufValue* v) {
  using T = GgufValueType;
  v->type = type;
  // One line per type reads as a table.
  // clang-format off
  switch (type) {
    case T::kUint8:   return c.ReadAs<uint8_t>(&v->u, "uint8");
    case T::kInt8:    return c.ReadAs<int8_t>(&v->i, "int8");
    case T::kUint16:  return c.ReadAs<uint16_t>(&v->u, "uint16");
    case T::kInt16:   return c.ReadAs<int16_t>(&v->i, "int16");
    case T::kUint32:  return c.ReadAs<uint32_t>(&v->u, "uint32");
    case T::kInt32:   return c.ReadAs<int32_t>(&v->i, "int32");
    case T::kUint64:  return c.ReadAs<uint64_t>(&v->u, "uint64");
    case T::kInt64:   return c.ReadAs<int64_t>(&v->i, "int64");
    case T::kFloat32: return c.ReadAs<float>(&v->f, "float32");
    case T::kFloat64: return c.ReadAs<double>(&v->f, "float64");
    case T::kString:  return c.ReadString(&v->s, "string value");
    case T::kArray:   return ReadArray(c, depth + 1, budget, v);
    case T::kBool:    break;
  }
  // clang-format on
  uint8_t b = 0;
  GGUF_RETURN_IF_ERROR(c.Read(&b, "bool"));
  if (b > 1) return Err("bool value ", int{b}, " is neither 0 nor 1");
  v->u = b;
  return absl::OkStatus();
}

// Reads a tensor info after its name; errors leave naming it to the caller.
absl::Status ReadTensorInfo(Cursor& c, GgufTensorInfo* t) {
  uint32_t n_dims = 0;
  GGUF_RETURN_IF_ERROR(c.Read(&n_dims, "n_dims"));
  if (n_dims > kMaxDims) return Err("n_dims ", n_dims, " exceeds ", kMaxDims);
  for (uint32_t d = 0; d < n_dims; ++d) {
    uint64_t dim = 0;
    GGUF_RETURN_IF_ERROR(c.Read(&dim, "dim"));
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Err("dims[", d, "] ", dim, " exceeds int64");
    }
    t->dims.push_back(static_cast<int64_t>(dim));
  }
  uint32_t raw_type = 0;
  GGUF_RETURN_IF_ERROR(c.Read(&raw_type, "type"));
  absl::StatusOr<uint64_t> n_bytes = ShapeBytes(raw_type, t->dims);
  if (!n_bytes.ok()) return n_bytes.status();
  t->type = static_cast<kernels::GgmlType>(raw_type);
  t->n_bytes = *n_bytes;
  return c.Read(&t->offset, "offset");
}

absl::Status AlignmentFromValue(const GgufValue& v, uint64_t* alignment) {
  uint64_t a = 0;
  if (!IsInteger(v.type)) {
    return Err(kAlignmentKey, " has type ", DescribeType(v),
               ", want an integer");
  }
  if (!ToUint(v, &a) || a > std::numeric_limits<uint32_t>::max()) {
    return Err(kAlignmentKey, " ", IntegerToString(v), " does not fit uint32");
  }
  if (!IsPowerOfTwo(a)) {
    return Err(kAlignmentKey, " ", a, " is not a power of two");
  }
  *alignment = a;
  return absl::OkStatus();
}

absl::Status ErrnoError(const char* verb, const std::string& path, int e) {
  const std::string msg = absl::StrCat(
      "gguf: cannot ", verb, " '", path,
      "': ", std::error_code(e, std::generic_category()).message());
  if (e == ENOENT || e == ENOTDIR) return absl::NotFoundError(msg);
  return absl::InvalidArgumentError(msg);
}

using Metadata = std::vector<std::pair<std::string, GgufValue>>;
using NameIndex = absl::flat_hash_map<std::string, size_t>;

absl::Status ReadHeader(Cursor& c, uint32_t* version, uint64_t* tensor_count,
                        uint64_t* kv_count) {
  char magic[sizeof(kMagic)];
  GGUF_RETURN_IF_ERROR(c.Read(&magic, "magic"));
  if (std::memcmp(magic, kMagic, sizeof(kMagic)) != 0) {
    return Err("bad magic \"",
               absl::CHexEscape(absl::string_view(magic, sizeof(magic))),
               "\" (want \"GGUF\")");
  }
  GGUF_RETURN_IF_ERROR(c.Read(version, "version"));
  if (*version == 0x02000000u || *version == 0x03000000u) {
    return Err("big-endian GGUF is not supported");
  }
  if (*version != 2 && *version != 3) {
    return Err("unsupported version ", *version, " (want 2 or 3)");
  }
  GGUF_RETURN_IF_ERROR(c.Read(tensor_count, "tensor_count"));
  GGUF_RETURN_IF_ERROR(c.Read(kv_count, "kv_count"));
  if (*kv_count > c.left() / kMinKvBytes) {
    return Err("kv_count ", *kv_count, " cannot fit in the ", c.left(),
               " bytes left");
  }
  if (*tensor_count > c.left() / kMinTensorInfoBytes) {
    return Err("tensor_count ", *tensor_count, " cannot fit in the ", c.left(),
               " bytes left");
  }
  return absl::OkStatus();
}

absl::Status ReadMetadata(Cursor& c, uint64_t kv_count, Metadata* metadata,
                          NameIndex* index) {
  metadata->reserve(kv_count);
  index->reserve(kv_count);
  uint64_t budget = kMaxArrayElements;
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key;
    if (absl::Status st = c.ReadString(&key, "key"); !st.ok()) {
      return Err("kv ", i, ": ", st.message());
    }
    if (!index->try_emplace(key, metadata->size()).second) {
      return Err("duplicate key ", Quote(key));
    }
    GgufValue v;
    uint32_t raw = 0;
    absl::Status st = c.Read(&raw, "value type");
    if (st.ok() && !IsKnownValueType(raw)) {
      st = Err("unknown value type ", raw);
    }
    if (st.ok()) {
      st = ReadValue(c, static_cast<GgufValueType>(raw), 0, &budget, &v);
    }
    if (!st.ok()) return Err("key ", Quote(key), ": ", st.message());
    metadata->emplace_back(std::move(key), std::move(v));
  }
  return absl::OkStatus();
}

absl::Status ReadTensorInfos(Cursor& c, uint64_t tensor_count,
                             std::vector<GgufTensorInfo>* tensors,
                             NameIndex* index) {
  tensors->reserve(tensor_count);
  index->reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    if (absl::Status st = c.ReadString(&t.name, "tensor name"); !st.ok()) {
      return Err("tensor info ", i, ": ", st.message());
    }
    if (!index->try_emplace(t.name, tensors->size()).second) {
      return Err("duplicate tensor name ", Quote(t.name));
    }
    if (absl::Status st = ReadTensorInfo(c, &t); !st.ok()) {
      return Err("tensor ", Quote(t.name), ": ", st.message());
    }
    tensors->push_back(std::move(t));
  }
  return absl::OkStatus();
}

absl::Status LocateTensorData(const uint8_t* data, uint64_t size,
                              uint64_t info_end, uint64_t alignment,
                              std::vector<GgufTensorInfo>* tensors) {
  // Data starts at the first multiple of the alignment after the infos.
  const uint64_t data_start =
      info_end + (alignment - info_end % alignment) % alignment;
  for (GgufTensorInfo& t : *tensors) {
    if (t.offset % alignment != 0) {
      return Err("tensor ", Quote(t.name), ": offset ", t.offset,
                 " is not a multiple of the alignment ", alignment);
    }
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(data_start, t.offset, &begin) ||
        __builtin_add_overflow(begin, t.n_bytes, &end)) {
      return Err("tensor ", Quote(t.name), ": data offset ", t.offset, " (+",
                 t.n_bytes, " bytes) past end of file (size ", size, ")");
    }
    if (end > size) {
      return Err("tensor ", Quote(t.name), ": data [", begin, ", ", end,
                 ") past end of file (size ", size, ")");
    }
    t.data = data + begin;
  }
  return absl::OkStatus();
}

}  // namespace

int64_t GgufTensorInfo::NumElements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// GgufFile

GgufFile::~GgufFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
  if (owned_ != nullptr) {
    ::operator delete(owned_, std::align_val_t(kOwnedAlignment));
  }
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(
    const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path, errno);
  // The mapping keeps the file alive; the descriptor is not needed after it.
  absl::Cleanup close_fd = [fd] { close(fd); };
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gguf: '", path, "' is not a regular file"));
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->map_size_ = static_cast<uint64_t>(st.st_size);
  if (file->map_size_ > 0) {
    void* map = mmap(nullptr, file->map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return ErrnoError("map", path, errno);
    file->map_ = map;
  }
  GGUF_RETURN_IF_ERROR(
      file->Parse(static_cast<const uint8_t*>(file->map_), file->map_size_));
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBytes(
    std::string_view bytes) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  if (!bytes.empty()) {
    file->owned_ =
        ::operator new(bytes.size(), std::align_val_t(kOwnedAlignment));
    std::memcpy(file->owned_, bytes.data(), bytes.size());
  }
  GGUF_RETURN_IF_ERROR(
      file->Parse(static_cast<const uint8_t*>(file->owned_), bytes.size()));
  return file;
}

absl::Status GgufFile::Parse(const uint8_t* data, uint64_t size) {
  Cursor c(data, size);
  absl::Status st = [&]() -> absl::Status {
    uint64_t tensor_count = 0, kv_count = 0;
    GGUF_RETURN_IF_ERROR(ReadHeader(c, &version_, &tensor_count, &kv_count));
    GGUF_RETURN_IF_ERROR(ReadMetadata(c, kv_count, &metadata_, &key_index_));
    if (const GgufValue* a = Find(kAlignmentKey)) {
      GGUF_RETURN_IF_ERROR(AlignmentFromValue(*a, &alignment_));
    }
    GGUF_RETURN_IF_ERROR(
        ReadTensorInfos(c, tensor_count, &tensors_, &tensor_index_));
    return LocateTensorData(data, size, c.pos(), alignment_, &tensors_);
  }();
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("gguf: ", st.message()));
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = key_index_.find(Sv(key));
  return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(Sv(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// Typed getters

namespace {

template <typename... Args>
absl::Status KeyError(std::string_view key, const Args&... args) {
  return absl::InvalidArgumentError(
      absl::StrCat("gguf: key ", Quote(key), args...));
}

bool IsString(GgufValueType t) { return t == GgufValueType::kString; }
bool IsBool(GgufValueType t) { return t == GgufValueType::kBool; }

// Fetches `key` and checks its type (or, for `array`, its element type) with
// `ok`; `want` names what `ok` accepts.
absl::StatusOr<const GgufValue*> LookupAs(const GgufFile& f,
                                          std::string_view key,
                                          bool (*ok)(GgufValueType),
                                          std::string_view want,
                                          bool array = false) {
  const GgufValue* v = f.Find(key);
  if (v == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("gguf: key ", Quote(key), " not found"));
  }
  const bool matches =
      array ? v->type == GgufValueType::kArray && ok(v->array_type)
            : ok(v->type);
  if (!matches) {
    return KeyError(key, " has type ", DescribeType(*v), ", want ", Sv(want));
  }
  return v;
}

}  // namespace

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  absl::StatusOr<const GgufValue*> v = LookupAs(*this, key, IsString, "string");
  if (!v.ok()) return v.status();
  return (*v)->s;
}

absl::StatusOr<uint64_t> GgufFile::GetUint(std::string_view key) const {
  absl::StatusOr<const GgufValue*> v =
      LookupAs(*this, key, IsInteger, "an integer");
  if (!v.ok()) return v.status();
  uint64_t out = 0;
  if (!ToUint(**v, &out))
    return KeyError(key, ": value ", IntegerToString(**v),
                    " does not fit uint64");
  return out;
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  absl::StatusOr<const GgufValue*> v =
      LookupAs(*this, key, IsInteger, "an integer");
  if (!v.ok()) return v.status();
  int64_t out = 0;
  if (!ToInt(**v, &out))
    return KeyError(key, ": value ", IntegerToString(**v),
                    " does not fit int64");
  return out;
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  absl::StatusOr<const GgufValue*> v =
      LookupAs(*this, key, IsFloat, "float32 or float64");
  if (!v.ok()) return v.status();
  return (*v)->f;
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  absl::StatusOr<const GgufValue*> v = LookupAs(*this, key, IsBool, "bool");
  if (!v.ok()) return v.status();
  return (*v)->u != 0;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(
    std::string_view key) const {
  absl::StatusOr<const GgufValue*> v =
      LookupAs(*this, key, IsString, "array of string", /*array=*/true);
  if (!v.ok()) return v.status();
  std::vector<std::string> out;
  out.reserve((*v)->array.size());
  for (const GgufValue& e : (*v)->array) out.push_back(e.s);
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(
    std::string_view key) const {
  absl::StatusOr<const GgufValue*> v =
      LookupAs(*this, key, IsInteger, "array of integers", /*array=*/true);
  if (!v.ok()) return v.status();
  std::vector<int64_t> out((*v)->array.size());
  for (size_t i = 0; i < out.size(); ++i) {
    if (!ToInt((*v)->array[i], &out[i])) {
      return KeyError(key, ": element ", i, " value ",
                      IntegerToString((*v)->array[i]), " does not fit int64");
    }
  }
  return out;
}

absl::StatusOr<std::vector<double>> GgufFile::GetFloatArray(
    std::string_view key) const {
  absl::StatusOr<const GgufValue*> v =
      LookupAs(*this, key, IsFloat, "array of float32 or float64",
               /*array=*/true);
  if (!v.ok()) return v.status();
  std::vector<double> out;
  out.reserve((*v)->array.size());
  for (const GgufValue& e : (*v)->array) out.push_back(e.f);
  return out;
}

}  // namespace kvsession::runtime
