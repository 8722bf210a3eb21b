// Every malformed input must fail with INVALID_ARGUMENT and a message that
// names the problem; none may crash or read outside the input.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/check.h"
#include "kernels/ggml_type.h"
#include "runtime/gguf.h"

namespace kvsession::runtime {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint32_t kArray = 9;
constexpr uint32_t kF32 = 0;
constexpr uint32_t kQ4_0 = 2;

// Hand-assembles GGUF bytes, including ones the writer refuses to produce.
class Bytes {
 public:
  Bytes& Raw(std::string_view s) {
    out_.append(s);
    return *this;
  }
  Bytes& U8(uint8_t v) { return Put(v); }
  Bytes& U32(uint32_t v) { return Put(v); }
  Bytes& I32(int32_t v) { return Put(v); }
  Bytes& U64(uint64_t v) { return Put(v); }
  Bytes& Str(std::string_view s) {
    U64(s.size());
    return Raw(s);
  }
  Bytes& Header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    return Raw("GGUF").U32(version).U64(tensors).U64(kvs);
  }
  Bytes& TensorInfo(std::string_view name, std::vector<uint64_t> dims,
                    uint32_t type, uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  Bytes& PadTo(size_t alignment) {
    out_.append((alignment - out_.size() % alignment) % alignment, '\0');
    return *this;
  }
  Bytes& Zeros(size_t n) {
    out_.append(n, '\0');
    return *this;
  }
  std::string str() const { return out_; }

 private:
  template <typename T>
  Bytes& Put(T v) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));
    out_.append(buf, sizeof(T));
    return *this;
  }
  std::string out_;
};

// One value of type u32 under `key`.
Bytes KvU32(std::string_view key, uint32_t v) {
  return std::move(Bytes().Header(0, 1).Str(key).U32(4).U32(v));
}

// `levels` arrays nested inside each other, the innermost empty.
std::string NestedArrays(int levels) {
  Bytes b;
  b.Header(0, 1).Str("deep").U32(kArray);
  for (int i = 1; i < levels; ++i) b.U32(kArray).U64(1);
  return b.U32(4).U64(0).str();
}

// A file with one F32 tensor of `dims` at `offset` and its data.
std::string OneTensor(std::vector<uint64_t> dims, uint32_t type,
                      uint64_t offset, size_t data_bytes) {
  return Bytes()
      .Header(1, 0)
      .TensorInfo("t", std::move(dims), type, offset)
      .PadTo(32)
      .Zeros(data_bytes)
      .str();
}

struct Case {
  std::string name;
  std::string bytes;
  std::string message;  // substring the error must contain
};

std::vector<Case> Cases() {
  return {
      {"Empty", "", "truncated file: magic"},
      {"BadMagic", Bytes().Raw("GGUX").U32(3).U64(0).U64(0).str(),
       "bad magic \"GGUX\""},
      {"Version1", Bytes().Header(0, 0, 1).str(), "unsupported version 1"},
      {"Version99", Bytes().Header(0, 0, 99).str(), "unsupported version 99"},
      {"BigEndian", Bytes().Header(0, 0, 0x03000000).str(), "big-endian"},
      {"TruncatedHeader", Bytes().Raw("GGUF").U32(3).U32(0).str(),
       "truncated file: tensor_count"},
      {"HugeKvCount", Bytes().Header(0, uint64_t{1} << 62).str(),
       "kv_count 4611686018427387904 cannot fit"},
      {"HugeTensorCount", Bytes().Header(~uint64_t{0}, 0).str(),
       "tensor_count 18446744073709551615 cannot fit"},
      {"KvCountOneTooMany",
       Bytes().Header(0, 2).Str("k").U32(0).U8(1).Zeros(12).str(),
       "key '': truncated file: uint8 needs 1 bytes"},
      {"HugeKeyLength",
       Bytes().Header(0, 1).U64(uint64_t{1} << 62).Zeros(8).str(),
       "kv 0: key: string length 4611686018427387904 exceeds"},
      {"HugeStringValue",
       Bytes().Header(0, 1).Str("s").U32(8).U64(~uint64_t{0}).str(),
       "key 's': string value: string length 18446744073709551615 exceeds"},
      {"HugeArrayCount",
       Bytes()
           .Header(0, 1)
           .Str("arr")
           .U32(kArray)
           .U32(4)
           .U64(uint64_t{1} << 60)
           .str(),
       "key 'arr': array count 1152921504606846976 of uint32 cannot fit"},
      {"HugeArrayOfStrings",
       Bytes()
           .Header(0, 1)
           .Str("arr")
           .U32(kArray)
           .U32(8)
           .U64(1000)
           .Zeros(100)
           .str(),
       "key 'arr': array count 1000 of string cannot fit"},
      {"UnknownValueType", Bytes().Header(0, 1).Str("k").U32(13).U32(0).str(),
       "key 'k': unknown value type 13"},
      {"UnknownArrayElementType",
       Bytes().Header(0, 1).Str("k").U32(kArray).U32(42).U64(0).str(),
       "key 'k': unknown array element type 42"},
      {"BoolNotZeroOrOne", Bytes().Header(0, 1).Str("b").U32(7).U8(2).str(),
       "key 'b': bool value 2 is neither 0 nor 1"},
      {"TruncatedValue", Bytes().Header(0, 1).Str("k").U32(10).U32(0).str(),
       "key 'k': truncated file: uint64 needs 8 bytes"},
      {"DuplicateKey",
       Bytes().Header(0, 2).Str("k").U32(4).U32(1).Str("k").U32(4).U32(2).str(),
       "duplicate key 'k'"},
      {"NestingTooDeep", NestedArrays(9),
       "key 'deep': arrays nested deeper than 8"},
      {"AlignmentZero", KvU32("general.alignment", 0).str(),
       "general.alignment 0 is not a power of two"},
      {"AlignmentThree", KvU32("general.alignment", 3).str(),
       "general.alignment 3 is not a power of two"},
      {"AlignmentNegative",
       Bytes().Header(0, 1).Str("general.alignment").U32(5).I32(-32).str(),
       "general.alignment -32 does not fit uint32"},
      {"AlignmentString",
       Bytes().Header(0, 1).Str("general.alignment").U32(8).Str("32").str(),
       "general.alignment has type string, want an integer"},
      {"TensorNameTruncated",
       Bytes().Header(1, 0).U64(100).Raw("abc").Zeros(21).str(),
       "tensor info 0: tensor name: string length 100 exceeds"},
      {"NDims5", OneTensor({1, 1, 1, 1, 1}, kF32, 0, 4),
       "tensor 't': n_dims 5 exceeds 4"},
      {"DimZero", OneTensor({4, 0}, kF32, 0, 16), "tensor 't': dims[1] is 0"},
      {"DimsOverflowProduct",
       OneTensor({uint64_t{1} << 32, uint64_t{1} << 32}, kF32, 0, 0),
       "tensor 't': element count overflows at dims[1] = 4294967296"},
      {"DimAboveInt64", OneTensor({uint64_t{1} << 63}, kF32, 0, 0),
       "tensor 't': dims[0] 9223372036854775808 exceeds int64"},
      {"ByteSizeOverflows", OneTensor({uint64_t{1} << 62}, kF32, 0, 0),
       "tensor 't': tensor size overflows"},
      {"RowNotWholeBlocks", OneTensor({33}, kQ4_0, 0, 64),
       "tensor 't': dims[0] 33 is not a multiple of the Q4_0 block size 32"},
      {"UnknownTensorType", OneTensor({4}, 99, 0, 64),
       "tensor 't': unknown tensor type 99"},
      {"OffsetNotAligned", OneTensor({4}, kF32, 4, 64),
       "tensor 't': offset 4 is not a multiple of the alignment 32"},
      {"DataPastEnd", OneTensor({8}, kF32, 0, 31),
       "tensor 't': data [64, 96) past end of file (size 95)"},
      {"OffsetPastEnd", OneTensor({8}, kF32, 64, 32),
       "tensor 't': data [128, 160) past end of file (size 96)"},
      {"OffsetOverflows", OneTensor({8}, kF32, ~uint64_t{31}, 32),
       "tensor 't': data offset 18446744073709551584 (+32 bytes) past end of "
       "file"},
      {"DuplicateTensorName",
       Bytes()
           .Header(2, 0)
           .TensorInfo("w", {8}, kF32, 0)
           .TensorInfo("w", {8}, kF32, 32)
           .PadTo(32)
           .Zeros(64)
           .str(),
       "duplicate tensor name 'w'"},
      {"UnalignedUnderCustomAlignment",
       Bytes()
           .Header(1, 1)
           .Str("general.alignment")
           .U32(4)
           .U32(64)
           .TensorInfo("t", {8}, kF32, 32)
           .PadTo(64)
           .Zeros(128)
           .str(),
       "tensor 't': offset 32 is not a multiple of the alignment 64"},
  };
}

class GgufMalformedTest : public testing::TestWithParam<Case> {};

TEST_P(GgufMalformedTest, FailsWithMessage) {
  const Case& c = GetParam();
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::FromBytes(c.bytes);
  ASSERT_FALSE(f.ok()) << c.name << " parsed";
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()), StartsWith("gguf: "));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(c.message));
}

INSTANTIATE_TEST_SUITE_P(Cases, GgufMalformedTest, testing::ValuesIn(Cases()),
                         [](const testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

TEST(GgufMalformed, NestingAtTheLimitIsAccepted) {
  auto f = GgufFile::FromBytes(NestedArrays(8));
  ASSERT_TRUE(f.ok()) << f.status();
}

TEST(GgufMalformed, HandAssembledFileParses) {
  // Guards the builder: the cases above differ from this in one field.
  auto f = GgufFile::FromBytes(OneTensor({8}, kF32, 0, 32));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors()[0].n_bytes, 32u);
}

// A small valid file whose last tensor ends exactly at the end of the file,
// so that every strict prefix is invalid.
std::string SmallValidFile() {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.block_count", 2);
  w.AddStringArray("tokenizer.ggml.tokens", {"a", "bc", ""});
  GgufValue nested;
  nested.type = GgufValueType::kArray;
  nested.array_type = GgufValueType::kArray;
  nested.array.resize(1);
  nested.array[0].type = GgufValueType::kArray;
  nested.array[0].array_type = GgufValueType::kFloat32;
  nested.array[0].array.resize(2);
  for (GgufValue& e : nested.array[0].array) e.type = GgufValueType::kFloat32;
  w.AddValue("nested", nested);
  KVS_CHECK_OK(
      w.AddTensor("q", kernels::GgmlType::kQ4_0, {32}, std::string(18, '\1')));
  KVS_CHECK_OK(
      w.AddTensor("f", kernels::GgmlType::kF32, {8, 2}, std::string(64, '\2')));
  return w.Serialize();
}

TEST(GgufMalformed, EveryTruncationFails) {
  const std::string file = SmallValidFile();
  ASSERT_TRUE(GgufFile::FromBytes(file).ok());
  for (size_t n = 0; n < file.size(); ++n) {
    auto f = GgufFile::FromBytes(std::string_view(file).substr(0, n));
    ASSERT_FALSE(f.ok()) << "prefix " << n << " of " << file.size();
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(std::string(f.status().message()), StartsWith("gguf: ")) << n;
  }
}

TEST(GgufMalformed, ByteCorruptionNeverCrashes) {
  const std::string file = SmallValidFile();
  for (size_t i = 0; i < file.size(); ++i) {
    for (uint8_t v : {0x00, 0x01, 0x07, 0x09, 0x80, 0xff}) {
      std::string bad = file;
      bad[i] = static_cast<char>(v);
      auto f = GgufFile::FromBytes(bad);
      if (!f.ok()) {
        EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
      }
    }
  }
}

}  // namespace
}  // namespace kvsession::runtime
