// Checks the tokenizer against llama.cpp on the default model's vocab. The
// reference ids come from tests/runtime/make_tokenizer_vectors.py.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

namespace kvsession::runtime {
namespace {

struct Vector {
  bool special = false;
  std::string text;
  std::vector<int32_t> ids;
};

std::string Unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::vector<Vector> LoadVectors() {
  std::ifstream in(std::string(KVSESSION_TEST_DATA_DIR) +
                   "/tokenizer_vectors.tsv");
  std::vector<Vector> vectors;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string special, hex, ids;
    std::getline(fields, special, '\t');
    std::getline(fields, hex, '\t');
    std::getline(fields, ids);
    Vector v;
    v.special = special == "1";
    v.text = Unhex(hex);
    std::istringstream id_stream(ids);
    for (int32_t id; id_stream >> id;) v.ids.push_back(id);
    vectors.push_back(std::move(v));
  }
  return vectors;
}

// Printable form of a test text for failure messages.
std::string Escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

class TokenizerE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("KVSESSION_MODEL");
    if (path == nullptr) return;
    auto file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = file->release();
    auto tok = Tokenizer::FromGguf(*file_);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    delete file_;
    file_ = nullptr;
  }
  void SetUp() override {
    if (std::getenv("KVSESSION_MODEL") == nullptr) {
      GTEST_SKIP() << "KVSESSION_MODEL is not set";
    }
    ASSERT_NE(tokenizer_, nullptr);
  }

  // Same vocab and merges, another tokenizer.ggml.pre.
  static std::unique_ptr<Tokenizer> WithPre(const std::string& pre) {
    VocabData v;
    v.pre = pre;
    auto tokens = file_->GetStringArray("tokenizer.ggml.tokens");
    auto types = file_->GetIntArray("tokenizer.ggml.token_type");
    auto merges = file_->GetStringArray("tokenizer.ggml.merges");
    EXPECT_TRUE(tokens.ok() && types.ok() && merges.ok());
    if (!tokens.ok() || !types.ok() || !merges.ok()) return nullptr;
    v.tokens = *std::move(tokens);
    for (int64_t t : *types) v.token_types.push_back(static_cast<TokenType>(t));
    v.merges = *std::move(merges);
    auto tok = Tokenizer::Create(std::move(v));
    EXPECT_TRUE(tok.ok()) << tok.status();
    return tok.ok() ? *std::move(tok) : nullptr;
  }

  static GgufFile* file_;
  static Tokenizer* tokenizer_;
};

GgufFile* TokenizerE2eTest::file_ = nullptr;
Tokenizer* TokenizerE2eTest::tokenizer_ = nullptr;

TEST_F(TokenizerE2eTest, VocabMetadata) {
  const Tokenizer& tok = *tokenizer_;
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  for (int32_t id = 0; id <= 16; ++id) {
    EXPECT_EQ(tok.token_type(id), TokenType::kControl) << id;
  }
  EXPECT_EQ(tok.token_type(17), TokenType::kNormal);
  EXPECT_EQ(tok.FindToken("<|endoftext|>"), 0);
  EXPECT_EQ(tok.FindToken("<|im_start|>"), 1);
  EXPECT_EQ(tok.FindToken("<|im_end|>"), 2);
  EXPECT_TRUE(tok.IsEndOfGeneration(2));
  EXPECT_TRUE(tok.IsEndOfGeneration(0));
  EXPECT_FALSE(tok.IsEndOfGeneration(1));
  // add_bos_token is false for SmolLM2.
  EXPECT_EQ(tok.Encode("Hi", false, /*add_special=*/true),
            tok.Encode("Hi", false));
}

TEST_F(TokenizerE2eTest, MatchesLlamaCppVectors) {
  std::vector<Vector> vectors = LoadVectors();
  ASSERT_GE(vectors.size(), 250u);
  int mismatches = 0;
  for (const Vector& v : vectors) {
    std::vector<int32_t> ids = tokenizer_->Encode(v.text, v.special);
    if (ids != v.ids) ++mismatches;
    EXPECT_EQ(ids, v.ids) << "special=" << v.special << " text=\""
                          << Escaped(v.text) << "\"";
    for (int32_t id : ids) {
      EXPECT_TRUE(id >= 0 && id < tokenizer_->vocab_size()) << id;
    }
    EXPECT_EQ(tokenizer_->Decode(ids, /*render_special=*/v.special), v.text)
        << Escaped(v.text);
  }
  EXPECT_EQ(mismatches, 0) << "of " << vectors.size();
}

TEST_F(TokenizerE2eTest, StreamingDecodeMatchesDecode) {
  for (const Vector& v : LoadVectors()) {
    StreamingDetokenizer detok(*tokenizer_, v.special);
    std::string streamed;
    for (int32_t id : v.ids) streamed += detok.Push(id);
    streamed += detok.Flush();
    EXPECT_EQ(streamed, v.text) << Escaped(v.text);
  }
}

// Other pre-tokenizers on the same vocab, against llama.cpp with the GGUF's
// tokenizer.ggml.pre changed (make_tokenizer_vectors.py --pre-variants,
// which checks 285 texts; these are the ones whose ids differ from smollm's
// plus a spread of the rest). This vocab has no multi-digit tokens, so
// Llama 3's \p{N}{1,3} and Qwen2's \p{N} give the same ids: one table
// serves both.
struct PreCase {
  const char* text;
  std::vector<int32_t> ids;
};

const std::vector<PreCase>& OtherPreCases() {
  static const auto* cases = new std::vector<PreCase>{
      {"Wait -- what?! No way; that's (almost) impossible: 100%.",
       {33359, 3009, 732, 17593, 2838, 970, 43, 338, 506, 365, 27423, 25, 6316,
        42, 216, 33, 32, 32, 8006}},
      {"it'S fine", {269, 23, 67, 4979}},
      {"it'LL fine", {269, 23, 16421, 4979}},
      {"WE'LL SEE", {23342, 23, 16421, 334, 8405}},
      {"We'Ll see", {1882, 23, 60, 92, 963}},
      {"I'M HERE", {57, 23, 61, 27873}},
      {"y'all'd've", {105, 23, 449, 6737, 3543}},
      {"  leading spaces", {216, 2899, 5600}},
      {"trailing spaces   ", {4861, 4966, 5600, 333}},
      {"tabs\t\t\tand spaces  \t  mixed",
       {100, 7366, 1656, 197, 397, 5600, 256, 197, 216, 6468}},
      {"\n\n\n\n", {22342}},
      {"line1\n\nline2\n\n\nline3",
       {1311, 33, 1116, 1311, 34, 16506, 1311, 35}},
      {"windows\r\nline\r\nendings", {37066, 2738, 1311, 2738, 486, 616}},
      {"\r\n\r\n", {18682}},
      {" \n ", {3717, 216}},
      {"  \n  \n  ", {256, 11181, 198, 256}},
      {"word\n \nword", {3002, 198, 3717, 3002}},
      {"indent\n    four\n        eight\n\tand tab",
       {32166, 198, 333, 1876, 198, 415, 4475, 198, 197, 397, 10147}},
      {"non\302\240breaking\302\240space", {9033, 15442, 11194, 15442, 11602}},
      {"ideographic\343\200\200space", {489, 4551, 12109, 218, 11602}},
      {"next\302\205line", {11282, 141, 223, 1311}},
      {"zero\342\200\213width", {13723, 321, 229, 6930}},
      {"12345", {33, 34, 35, 36, 37}},
      {"1234567890", {33, 34, 35, 36, 37, 38, 39, 40, 41, 32}},
      {"3.14159265358979323846", {35, 30, 33, 36, 33, 37, 41, 34, 38, 37, 35,
                                  37, 40, 41, 39, 41, 35, 34, 35, 40, 36, 38}},
      {"+1 (555) 123-4567",
       {27, 33, 365, 37, 37, 37, 25, 216, 33, 34, 35, 29, 36, 37, 38, 39}},
      {"\357\274\221\357\274\222\357\274\223 fullwidth",
       {8083, 235, 8083, 236, 8083, 237, 2073, 6930}},
      {"Caf\303\251 d\303\251j\303\240 vu.",
       {51, 1939, 2756, 32564, 90, 16739, 386, 101, 30}},
      {"\314\201 lone combining acute at start",
       {151, 219, 33023, 9301, 8937, 418, 1120}},
      {"Z\315\221\315\253\315\203\315\252\314\202\315\253\314\275\315\217\314"
       "\264\314\231algo",
       {74,  152, 235, 152, 121, 152, 221, 152, 120, 151, 220, 152,
        121, 151, 138, 152, 233, 151, 129, 151, 243, 272, 2345}},
      {"\344\275\240\345\245\275\357\274\214\344\270\226\347\225\214\357\274"
       "\201",
       {18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230, 8083, 219}},
      {"\343\201\223\343\202\223\343\201\253\343\201\241\343\201\257\344\270"
       "\226\347\225\214",
       {7365, 237, 10391, 237, 41152, 7365, 111, 7365, 124, 7906, 240, 178, 239,
        230}},
      {"\354\225\210\353\205\225\355\225\230\354\204\270\354\232\224 "
       "\354\204\270\352\263\204",
       {183, 239, 226, 182, 223,   239, 33085, 242, 183, 222,
        133, 183, 244, 238, 18601, 222, 133,   181, 128, 222}},
      {"\331\205\330\261\330\255\330\250\330\247 "
       "\330\250\330\247\331\204\330\271\330\247\331\204\331\205",
       {21706, 20602, 44626, 31462, 10805, 45726, 22208, 34966, 22208, 21706}},
      {"\360\237\221\215\360\237\217\275 thumbs up medium skin",
       {10813, 235, 231, 10813, 233, 138, 39239, 614, 5641, 2574}},
      {"\360\237\221\250\342\200\215\360\237\221\251\342\200\215\360\237\221"
       "\247\342\200\215\360\237\221\246 family",
       {10813, 235, 118, 321, 231, 10813, 235, 119, 321, 231, 10813, 235, 117,
        321, 231, 10813, 235, 116, 1564}},
      {"\356\200\200 private use \357\243\277",
       {185, 218, 218, 3646, 722, 216, 186, 113, 140}},
      {"\177 delete and \033[31m escape",
       {217, 13229, 284, 216, 212, 75, 35, 33, 93, 8080}},
      {"def f(x):\n    return x * 2\n",
       {1604, 275, 24, 104, 727, 198, 333, 1003, 1792, 1672, 216, 34, 198}},
      {"class Foo:\n    def __init__(self):\n        self.x = 1  # comment\n",
       {2064, 426, 568, 42, 198, 333, 753, 2758, 2563, 3762, 771,  727,
        198,  415, 639, 30, 104, 446, 216, 33,   216,  907,  5189, 198}},
      {"if (x != nullptr && y->z[3] >= 0) { return -1; }",
       {342, 365,   104, 6541, 10034, 31691, 1456, 22,  329, 22690, 106, 75, 35,
        77,  10888, 216, 32,   25,    1662,  1003, 731, 33,  43,    4029}},
      {"    indented code block\n        more indent",
       {333, 641, 6574, 2909, 3608, 198, 415, 540, 20409}},
      {"key: value\nlist:\n  - a\n  - b",
       {2393, 42, 1685, 198, 2402, 42, 198, 216, 731, 253, 198, 216, 731, 278}},
      {"https://www.example.com/path/to/page?query=1&other=two#frag",
       {4687, 1742, 3065, 30, 7434, 30, 824, 31, 1537,  31, 1141, 31,
        6853, 47,   8433, 45, 33,   22, 949, 45, 11355, 19, 28082}},
      {"<|im_start|>user\nHello<|im_end|>\n",
       {44, 108, 306, 79, 3738, 108, 46, 4093, 198, 19556, 44, 108, 306, 79,
        486, 108, 46, 198}},
      {"# Heading\n\n- item 1\n- item 2\n\n1. first\n2. second",
       {19,  909, 8200, 1116, 29, 5033, 216, 33, 198, 29,  5033,
        216, 34,  1116, 33,   30, 808,  198, 34, 30,  1796}},
      {"multi\n\n\n\nparagraph\n\n\n\ntext",
       {20437, 22342, 41099, 22342, 2692}},
      // clang-format on
  };
  return *cases;
}

TEST_F(TokenizerE2eTest, Llama3AndQwen2PreTokenizersMatchLlamaCpp) {
  for (const char* pre : {"llama-bpe", "qwen2"}) {
    auto tok = WithPre(pre);
    ASSERT_NE(tok, nullptr);
    for (const PreCase& c : OtherPreCases()) {
      EXPECT_EQ(tok->Encode(c.text, false), c.ids)
          << pre << ": " << Escaped(c.text);
    }
  }
}

// Broken UTF-8 against llama.cpp, which reads each offending byte as U+FFFD
// (make_tokenizer_vectors.py --invalid-utf8).
TEST_F(TokenizerE2eTest, InvalidUtf8MatchesLlamaCpp) {
  const std::vector<PreCase> cases = {
      {"a\377b", {81, 24211, 82}},
      {"\200 stray continuation", {24211, 26912, 25755}},
      {"truncated \342\202", {45924, 483, 216, 24211, 24211}},
      {"\342\202\254\342\202 euro and a half",
       {14195, 24211, 24211, 22989, 284, 253, 2745}},
      {"\303\251\303", {2756, 24211}},
      {"bad lead \370\210\200\200\200 five bytes",
       {12708, 1022, 216, 24211, 24211, 24211, 24211, 24211, 2531, 15590}},
      {"\376\377 BOM-ish bytes", {24211, 24211, 389, 9232, 29, 621, 15590}},
      {"\360\237\230 cut emoji\360\237\230\200",
       {24211, 24211, 24211, 2304, 649, 33777, 10813, 242, 218}},
  };
  for (const PreCase& c : cases) {
    std::vector<int32_t> ids = tokenizer_->Encode(c.text, false);
    EXPECT_EQ(ids, c.ids) << Escaped(c.text);
    std::string decoded = tokenizer_->Decode(ids);
    EXPECT_NE(decoded.find("\xEF\xBF\xBD"), std::string::npos);
  }
}

}  // namespace
}  // namespace kvsession::runtime
