#include "runtime/gguf.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/ggml_type.h"

namespace kvsession::runtime {
namespace {

using ::testing::HasSubstr;
using T = GgufValueType;

GgufValue U(T type, uint64_t u) {
  GgufValue v;
  v.type = type;
  v.u = u;
  return v;
}

GgufValue I(T type, int64_t i) {
  GgufValue v;
  v.type = type;
  v.i = i;
  return v;
}

GgufValue F(T type, double f) {
  GgufValue v;
  v.type = type;
  v.f = f;
  return v;
}

GgufValue S(std::string s) {
  GgufValue v;
  v.type = T::kString;
  v.s = std::move(s);
  return v;
}

GgufValue Arr(T elem_type, std::vector<GgufValue> elems) {
  GgufValue v;
  v.type = T::kArray;
  v.array_type = elem_type;
  v.array = std::move(elems);
  return v;
}

// Compares only the member that `type` uses.
void ExpectSameValue(const GgufValue& want, const GgufValue& got,
                     const std::string& where) {
  SCOPED_TRACE(where);
  ASSERT_EQ(want.type, got.type);
  switch (want.type) {
    case T::kUint8:
    case T::kUint16:
    case T::kUint32:
    case T::kUint64:
    case T::kBool:
      EXPECT_EQ(want.u, got.u);
      break;
    case T::kInt8:
    case T::kInt16:
    case T::kInt32:
    case T::kInt64:
      EXPECT_EQ(want.i, got.i);
      break;
    case T::kFloat32:
    case T::kFloat64:
      EXPECT_EQ(want.f, got.f);
      break;
    case T::kString:
      EXPECT_EQ(want.s, got.s);
      break;
    case T::kArray:
      ASSERT_EQ(want.array_type, got.array_type);
      ASSERT_EQ(want.array.size(), got.array.size());
      for (size_t i = 0; i < want.array.size(); ++i) {
        ExpectSameValue(want.array[i], got.array[i],
                        where + "[" + std::to_string(i) + "]");
      }
      break;
  }
}

std::vector<std::pair<std::string, GgufValue>> AllValueKinds() {
  return {
      {"u8", U(T::kUint8, 255)},
      {"i8", I(T::kInt8, -128)},
      {"u16", U(T::kUint16, 65535)},
      {"i16", I(T::kInt16, -32768)},
      {"u32", U(T::kUint32, 4000000000u)},
      {"i32", I(T::kInt32, -2000000000)},
      {"u64", U(T::kUint64, std::numeric_limits<uint64_t>::max())},
      {"i64", I(T::kInt64, std::numeric_limits<int64_t>::min())},
      {"f32", F(T::kFloat32, 1.5)},
      {"f64", F(T::kFloat64, -1e300)},
      {"bool.true", U(T::kBool, 1)},
      {"bool.false", U(T::kBool, 0)},
      {"str", S("hello")},
      {"str.empty", S("")},
      {"str.binary", S(std::string("a\0b\xff", 4))},
      {"arr.u8", Arr(T::kUint8, {U(T::kUint8, 0), U(T::kUint8, 7)})},
      {"arr.i16", Arr(T::kInt16, {I(T::kInt16, -1), I(T::kInt16, 300)})},
      {"arr.u64", Arr(T::kUint64, {U(T::kUint64, 1ull << 60)})},
      {"arr.f64", Arr(T::kFloat64, {F(T::kFloat64, 0.25)})},
      {"arr.bool", Arr(T::kBool, {U(T::kBool, 1), U(T::kBool, 0)})},
      {"arr.str", Arr(T::kString, {S("a"), S(""), S("ß")})},
      {"arr.empty", Arr(T::kInt32, {})},
      {"arr.empty_str", Arr(T::kString, {})},
      {"arr.nested",
       Arr(T::kArray,
           {Arr(T::kString, {S("x"), S("y")}), Arr(T::kInt8, {}),
            Arr(T::kArray, {Arr(T::kFloat32, {F(T::kFloat32, 2)})})})},
      {"général.名前", S("ユニコード")},
      {"", S("empty key")},
  };
}

TEST(GgufRoundTrip, EveryValueType) {
  GgufWriter w;
  const auto kinds = AllValueKinds();
  for (const auto& [k, v] : kinds) w.AddValue(k, v);
  absl::StatusOr<std::unique_ptr<GgufFile>> f =
      GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ((*f)->alignment(), 32u);
  EXPECT_TRUE((*f)->tensors().empty());
  ASSERT_EQ((*f)->metadata().size(), kinds.size());
  for (size_t i = 0; i < kinds.size(); ++i) {
    EXPECT_EQ((*f)->metadata()[i].first, kinds[i].first);
    ExpectSameValue(kinds[i].second, (*f)->metadata()[i].second,
                    kinds[i].first);
    const GgufValue* found = (*f)->Find(kinds[i].first);
    ASSERT_NE(found, nullptr) << kinds[i].first;
    ExpectSameValue(kinds[i].second, *found, kinds[i].first);
  }
  EXPECT_EQ((*f)->Find("absent"), nullptr);
  EXPECT_EQ((*f)->FindTensor("absent"), nullptr);
}

TEST(GgufRoundTrip, ConvenienceAddersAndReplacement) {
  GgufWriter w;
  w.AddUint32("a.u32", 7);
  w.AddInt32("a.i32", -7);
  w.AddUint64("a.u64", 1ull << 40);
  w.AddFloat32("a.f32", 0.5f);
  w.AddBool("a.bool", true);
  w.AddString("a.str", "s");
  w.AddStringArray("a.strs", {"x", "", "z"});
  w.AddInt32Array("a.ints", {1, -2, 3});
  w.AddFloat32Array("a.floats", {0.25f, -1.0f});
  w.AddUint32("a.u32", 8);  // replaces
  auto f = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.metadata().size(), 9u);
  EXPECT_EQ(*g.GetUint("a.u32"), 8u);
  EXPECT_EQ(*g.GetInt("a.i32"), -7);
  EXPECT_EQ(*g.GetUint("a.u64"), 1ull << 40);
  EXPECT_EQ(*g.GetFloat("a.f32"), 0.5);
  EXPECT_EQ(*g.GetBool("a.bool"), true);
  EXPECT_EQ(*g.GetString("a.str"), "s");
  EXPECT_THAT(*g.GetStringArray("a.strs"), testing::ElementsAre("x", "", "z"));
  EXPECT_THAT(*g.GetIntArray("a.ints"), testing::ElementsAre(1, -2, 3));
  EXPECT_THAT(*g.GetFloatArray("a.floats"), testing::ElementsAre(0.25, -1.0));
}

TEST(GgufRoundTrip, Version2IsAccepted) {
  GgufWriter w;
  w.AddString("k", "v");
  std::string bytes = w.Serialize();
  bytes[4] = 2;
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 2u);
  EXPECT_EQ(*(*f)->GetString("k"), "v");
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

struct TensorSpec {
  std::string name;
  kernels::GgmlType type;
  std::vector<int64_t> dims;
  std::string data;
};

// Two tensors of every known type, with varying ranks.
std::vector<TensorSpec> EveryTypeTensors() {
  std::vector<TensorSpec> specs;
  for (uint32_t raw = 0; raw < 64; ++raw) {
    const kernels::TypeTraits* t = kernels::GetTypeTraits(raw);
    if (t == nullptr) continue;
    const std::vector<std::vector<int64_t>> shapes = {{t->block_elems * 3},
                                                      {t->block_elems, 3, 2}};
    for (size_t s = 0; s < shapes.size(); ++s) {
      int64_t n = 1;
      for (int64_t d : shapes[s]) n *= d;
      const uint64_t bytes = *kernels::TensorBytes(t->type, n);
      specs.push_back({std::string(t->name) + "." + std::to_string(s), t->type,
                       shapes[s], RandomBytes(bytes, raw * 10 + s)});
    }
  }
  return specs;
}

class GgufTensorTest : public testing::TestWithParam<uint64_t> {};

TEST_P(GgufTensorTest, EveryTypeRoundTrips) {
  const uint64_t alignment = GetParam();
  GgufWriter w;
  w.AddString("general.architecture", "test");
  if (alignment != 32) w.set_alignment(alignment);
  const std::vector<TensorSpec> specs = EveryTypeTensors();
  ASSERT_GE(specs.size(), 2 * 12u);
  for (const TensorSpec& s : specs) {
    ASSERT_TRUE(w.AddTensor(s.name, s.type, s.dims, s.data).ok()) << s.name;
  }
  const std::string bytes = w.Serialize();
  auto f = GgufFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  const GgufFile& g = **f;
  EXPECT_EQ(g.alignment(), alignment);
  if (alignment != 32) {
    EXPECT_EQ(*g.GetUint("general.alignment"), alignment);
  }
  ASSERT_EQ(g.tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    SCOPED_TRACE(specs[i].name);
    const GgufTensorInfo& t = g.tensors()[i];
    EXPECT_EQ(g.FindTensor(specs[i].name), &t);
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.type, specs[i].type);
    EXPECT_EQ(t.dims, specs[i].dims);
    EXPECT_EQ(t.n_bytes, specs[i].data.size());
    EXPECT_EQ(t.offset % alignment, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % alignment, 0u);
    int64_t n = 1;
    for (int64_t d : specs[i].dims) n *= d;
    EXPECT_EQ(t.NumElements(), n);
    EXPECT_EQ(std::memcmp(t.data, specs[i].data.data(), t.n_bytes), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Alignments, GgufTensorTest,
                         testing::Values(32, 1, 8, 64, 256, 4096));

TEST(GgufTensor, AlignmentKeySetsWriterAlignment) {
  GgufWriter w;
  w.AddUint32("general.alignment", 128);
  ASSERT_TRUE(
      w.AddTensor("t", kernels::GgmlType::kF32, {3}, std::string(12, 'x'))
          .ok());
  ASSERT_TRUE(
      w.AddTensor("u", kernels::GgmlType::kF32, {1}, std::string(4, 'y')).ok());
  auto f = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->alignment(), 128u);
  EXPECT_EQ((*f)->FindTensor("u")->offset, 128u);
}

TEST(GgufTensor, WriterRejectsBadTensors) {
  GgufWriter w;
  using kernels::GgmlType;
  EXPECT_THAT(
      std::string(w.AddTensor("a", GgmlType::kF32, {4}, "abc").message()),
      HasSubstr("3 data bytes, want 16"));
  EXPECT_THAT(
      std::string(w.AddTensor("b", GgmlType::kQ4_0, {16}, "").message()),
      HasSubstr("not a multiple of the Q4_0 block size 32"));
  EXPECT_THAT(std::string(w.AddTensor("c", GgmlType::kF32, {1, 1, 1, 1, 1},
                                      std::string(4, 0))
                              .message()),
              HasSubstr("n_dims 5 exceeds 4"));
  EXPECT_THAT(std::string(w.AddTensor("d", GgmlType::kF32, {0}, "").message()),
              HasSubstr("dims[0] is 0"));
  EXPECT_THAT(
      std::string(
          w.AddTensor("e", static_cast<GgmlType>(99), {1}, "").message()),
      HasSubstr("unknown tensor type 99"));
  ASSERT_TRUE(w.AddTensor("f", GgmlType::kF32, {1}, std::string(4, 0)).ok());
  absl::Status dup = w.AddTensor("f", GgmlType::kF32, {1}, std::string(4, 0));
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.message()),
              HasSubstr("duplicate tensor name 'f'"));
}

TEST(GgufFileIo, OpenMapsWrittenFile) {
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.set_alignment(64);
  const std::string data = RandomBytes(34 * 4, 1);
  ASSERT_TRUE(w.AddTensor("q", kernels::GgmlType::kQ8_0, {32, 4}, data).ok());
  const std::string path = testing::TempDir() + "/gguf_test_open.gguf";
  ASSERT_TRUE(w.WriteFile(path).ok());
  auto f = GgufFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "llama");
  const GgufTensorInfo* t = (*f)->FindTensor("q");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % 64, 0u);
  EXPECT_EQ(std::string(static_cast<const char*>(t->data), t->n_bytes), data);
  std::remove(path.c_str());
}

TEST(GgufFileIo, MissingFileIsNotFound) {
  auto f = GgufFile::Open(testing::TempDir() + "/does/not/exist.gguf");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("cannot open"));
}

TEST(GgufFileIo, DirectoryIsRejected) {
  auto f = GgufFile::Open(testing::TempDir());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(f.status().message()),
              HasSubstr("not a regular file"));
}

TEST(GgufFileIo, WriteToBadPathFails) {
  GgufWriter w;
  EXPECT_FALSE(w.WriteFile(testing::TempDir() + "/no/such/dir/x.gguf").ok());
}

class GgufGetterTest : public testing::Test {
 protected:
  void SetUp() override {
    GgufWriter w;
    w.AddValue("u8", U(T::kUint8, 200));
    w.AddValue("i8.pos", I(T::kInt8, 5));
    w.AddValue("i32.neg", I(T::kInt32, -3));
    w.AddValue("u64.big", U(T::kUint64, 1ull << 63));
    w.AddValue("i64.min", I(T::kInt64, std::numeric_limits<int64_t>::min()));
    w.AddValue("f32", F(T::kFloat32, 0.5));
    w.AddValue("f64", F(T::kFloat64, 1e-300));
    w.AddValue("bool", U(T::kBool, 1));
    w.AddValue("str", S("text"));
    w.AddValue("ints",
               Arr(T::kUint16, {U(T::kUint16, 1), U(T::kUint16, 65535)}));
    w.AddValue("ints.big",
               Arr(T::kUint64, {U(T::kUint64, 1), U(T::kUint64, ~0ull)}));
    w.AddValue("floats", Arr(T::kFloat64, {F(T::kFloat64, 2.5)}));
    w.AddValue("strs", Arr(T::kString, {S("a")}));
    w.AddValue("nested", Arr(T::kArray, {Arr(T::kString, {S("a")})}));
    auto f = GgufFile::FromBytes(w.Serialize());
    ASSERT_TRUE(f.ok()) << f.status();
    file_ = std::move(*f);
  }

  static void ExpectError(const absl::Status& st, absl::StatusCode code,
                          const std::string& substr) {
    EXPECT_EQ(st.code(), code) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(substr));
  }

  std::unique_ptr<GgufFile> file_;
};

TEST_F(GgufGetterTest, IntegerConversions) {
  EXPECT_EQ(*file_->GetUint("u8"), 200u);
  EXPECT_EQ(*file_->GetInt("u8"), 200);
  EXPECT_EQ(*file_->GetUint("i8.pos"), 5u);
  EXPECT_EQ(*file_->GetInt("i32.neg"), -3);
  EXPECT_EQ(*file_->GetUint("u64.big"), 1ull << 63);
  EXPECT_EQ(*file_->GetInt("i64.min"), std::numeric_limits<int64_t>::min());
  ExpectError(file_->GetUint("i32.neg").status(),
              absl::StatusCode::kInvalidArgument,
              "value -3 does not fit uint64");
  ExpectError(file_->GetInt("u64.big").status(),
              absl::StatusCode::kInvalidArgument,
              "value 9223372036854775808 does not fit int64");
  ExpectError(file_->GetUint("f32").status(),
              absl::StatusCode::kInvalidArgument,
              "key 'f32' has type float32, want an integer");
  ExpectError(file_->GetInt("bool").status(),
              absl::StatusCode::kInvalidArgument, "has type bool");
}

TEST_F(GgufGetterTest, FloatBoolString) {
  EXPECT_EQ(*file_->GetFloat("f32"), 0.5);
  EXPECT_EQ(*file_->GetFloat("f64"), 1e-300);
  EXPECT_EQ(*file_->GetBool("bool"), true);
  EXPECT_EQ(*file_->GetString("str"), "text");
  ExpectError(file_->GetFloat("u8").status(),
              absl::StatusCode::kInvalidArgument,
              "key 'u8' has type uint8, want float32 or float64");
  ExpectError(file_->GetBool("u8").status(), absl::StatusCode::kInvalidArgument,
              "want bool");
  ExpectError(file_->GetString("u8").status(),
              absl::StatusCode::kInvalidArgument,
              "key 'u8' has type uint8, want string");
  ExpectError(file_->GetString("strs").status(),
              absl::StatusCode::kInvalidArgument,
              "has type array of string, want string");
}

TEST_F(GgufGetterTest, Arrays) {
  EXPECT_THAT(*file_->GetIntArray("ints"), testing::ElementsAre(1, 65535));
  EXPECT_THAT(*file_->GetFloatArray("floats"), testing::ElementsAre(2.5));
  EXPECT_THAT(*file_->GetStringArray("strs"), testing::ElementsAre("a"));
  ExpectError(file_->GetIntArray("ints.big").status(),
              absl::StatusCode::kInvalidArgument, "element 1 value");
  ExpectError(file_->GetIntArray("strs").status(),
              absl::StatusCode::kInvalidArgument,
              "has type array of string, want array of integers");
  ExpectError(file_->GetFloatArray("ints").status(),
              absl::StatusCode::kInvalidArgument, "want array of float32");
  ExpectError(file_->GetStringArray("nested").status(),
              absl::StatusCode::kInvalidArgument,
              "has type array of array, want array of string");
  ExpectError(file_->GetStringArray("str").status(),
              absl::StatusCode::kInvalidArgument, "has type string");
}

TEST_F(GgufGetterTest, MissingKeyIsNotFound) {
  ExpectError(file_->GetString("nope").status(), absl::StatusCode::kNotFound,
              "key 'nope' not found");
  ExpectError(file_->GetUint("nope").status(), absl::StatusCode::kNotFound,
              "not found");
  ExpectError(file_->GetInt("nope").status(), absl::StatusCode::kNotFound, "");
  ExpectError(file_->GetFloat("nope").status(), absl::StatusCode::kNotFound,
              "");
  ExpectError(file_->GetBool("nope").status(), absl::StatusCode::kNotFound, "");
  ExpectError(file_->GetStringArray("nope").status(),
              absl::StatusCode::kNotFound, "");
  ExpectError(file_->GetIntArray("nope").status(), absl::StatusCode::kNotFound,
              "");
  ExpectError(file_->GetFloatArray("nope").status(),
              absl::StatusCode::kNotFound, "");
}

}  // namespace
}  // namespace kvsession::runtime
