// The SentencePiece tokenizer on a tiny Llama 2 style vocab
// (add_space_prefix = true, <unk> <s> </s>, byte tokens, scored pieces).
// Expected ids and decodes come from llama.cpp on the same vocab written as a
// GGUF (tests/runtime/make_tokenizer_vectors_gemma3.py --tiny-spm).
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

namespace kvsession::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int32_t kUnk = 0;
constexpr int32_t kBos = 1;
constexpr int32_t kEos = 2;
constexpr int32_t kCtl = 3;   // control "<ctl>"
constexpr int32_t kTool = 4;  // user-defined "<tool>"
constexpr int32_t kFirstByte = 5;

int32_t ByteId(uint8_t b) { return kFirstByte + b; }

struct Piece {
  const char* text;
  float score;
};

// Ids from kFirstByte + 256 on; higher scores merge first.
const std::vector<Piece>& TinyPieces() {
  static const auto* pieces = new std::vector<Piece>{
      {"\342\226\201", -1.0f},
      {"a", -2.0f},
      {"b", -3.0f},
      {"c", -4.0f},
      {"e", -5.0f},
      {"h", -6.0f},
      {"l", -7.0f},
      {"o", -8.0f},
      {"w", -9.0f},
      {"r", -10.0f},
      {"d", -11.0f},
      {"t", -12.0f},
      {"n", -13.0f},
      {"i", -14.0f},
      {"s", -15.0f},
      {"x", -16.0f},
      {"y", -17.0f},
      {"z", -18.0f},
      {"g", -19.0f},
      {"\342\226\201t", -20.0f},
      {"he", -21.0f},
      {"\342\226\201the", -22.0f},
      {"ll", -23.0f},
      {"\342\226\201h", -24.0f},
      {"\342\226\201he", -30.0f},
      {"llo", -31.0f},
      {"\342\226\201hello", -32.0f},
      {"\342\226\201w", -33.0f},
      {"or", -34.0f},
      {"\342\226\201wor", -35.0f},
      {"ld", -36.0f},
      {"\342\226\201world", -37.0f},
      {"ab", -40.0f},
      {"bc", -40.0f},
      {"xy", -50.0f},
      {"yz", -45.0f},
      {"\342\226\201\342\226\201", -41.0f},
      {"\342\226\201\342\226\201\342\226\201\342\226\201", -42.0f},
      {"\346\227\245", -60.0f},
      {"\346\234\254", -61.0f},
      {"\346\227\245\346\234\254", -62.0f},
      {"\303\251", -63.0f},
      {"in", -64.0f},
      {"\342\226\201in", -65.0f},
      {"ing", -66.0f},
      {"\342\226\201s", -67.0f},
      {"<", -70.0f},
      {">", -71.0f},
      {"/", -72.0f},
      {"</", -73.0f},
      {"</s", -74.0f},
  };
  return *pieces;
}

VocabData TinySpmVocab() {
  VocabData v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>", "<ctl>", "<tool>"};
  v.token_types = {TokenType::kUnknown, TokenType::kControl,
                   TokenType::kControl, TokenType::kControl,
                   TokenType::kUserDefined};
  v.scores.assign(5, 0.0f);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    v.tokens.push_back(name);
    v.token_types.push_back(TokenType::kByte);
    v.scores.push_back(0.0f);
  }
  for (const Piece& p : TinyPieces()) {
    v.tokens.push_back(p.text);
    v.token_types.push_back(TokenType::kNormal);
    v.scores.push_back(p.score);
  }
  v.unk_id = kUnk;
  v.bos_id = kBos;
  v.eos_id = kEos;
  v.add_bos = true;
  v.add_space_prefix = true;
  return v;
}

std::unique_ptr<Tokenizer> Make(VocabData v) {
  auto tok = Tokenizer::Create(std::move(v));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

class SpmTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tok_ = Make(TinySpmVocab());
    ASSERT_NE(tok_, nullptr);
  }
  int32_t Id(const char* text) const {
    std::optional<int32_t> id = tok_->FindToken(text);
    EXPECT_TRUE(id.has_value()) << text;
    return id.value_or(-1);
  }
  std::unique_ptr<Tokenizer> tok_;
};

struct LlamaCppCase {
  const char* text;
  bool special;
  bool add_bos;
  std::vector<int32_t> ids;
  const char* decoded;  // llama_detokenize(remove_special = false)
};

const std::vector<LlamaCppCase>& LlamaCppCases() {
  static const auto* cases = new std::vector<LlamaCppCase>{
      {"", 0, 0, {}, ""},
      {"hello world", 0, 0, {287, 292}, "hello world"},
      {"Hello world", 0, 0, {261, 77, 265, 286, 292}, "Hello world"},
      {" hello", 0, 0, {261, 287}, " hello"},
      {"hello  world", 0, 0, {287, 261, 292}, "hello  world"},
      {"   ", 0, 0, {298}, "   "},
      {" ", 0, 0, {297}, " "},
      {"abc", 0, 0, {261, 293, 264}, "abc"},
      {"bca", 0, 0, {261, 294, 262}, "bca"},
      {"abcbc", 0, 0, {261, 293, 264, 294}, "abcbc"},
      {"xyz", 0, 0, {261, 276, 296}, "xyz"},
      {"zxyz", 0, 0, {261, 278, 276, 296}, "zxyz"},
      {"the", 0, 0, {282}, "the"},
      {"the hello", 0, 0, {282, 287}, "the hello"},
      {"thello", 0, 0, {282, 286}, "thello"},
      {"\346\227\245\346\234\254",
       0,
       0,
       {261, 301},
       "\346\227\245\346\234\254"},
      {"\346\227\245\346\234\254\350\252\236",
       0,
       0,
       {261, 301, 237, 175, 163},
       "\346\227\245\346\234\254\350\252\236"},
      {"\303\251", 0, 0, {261, 302}, "\303\251"},
      {"e\314\201", 0, 0, {261, 265, 209, 134}, "e\314\201"},
      {"\360\237\230\200", 0, 0, {261, 245, 164, 157, 133}, "\360\237\230\200"},
      {"a\360\237\230\200b",
       0,
       0,
       {261, 262, 245, 164, 157, 133, 263},
       "a\360\237\230\200b"},
      {"<tool>", 0, 0, {4}, "<tool>"},
      {"a<tool>b", 0, 0, {261, 262, 4, 261, 263}, "a<tool> b"},
      {"<tool><tool>", 0, 0, {4, 4}, "<tool><tool>"},
      {"<s>", 0, 0, {261, 307, 275, 308}, "<s>"},
      {"a<s>b", 0, 0, {261, 262, 307, 275, 308, 263}, "a<s>b"},
      {"<s>hello", 0, 0, {261, 307, 275, 308, 281, 286}, "<s>hello"},
      {"hello</s>", 0, 0, {287, 2}, "hello"},
      {"</s>", 0, 0, {261, 2}, ""},
      {"<ctl>", 0, 0, {261, 307, 264, 272, 267, 308}, "<ctl>"},
      {"a <ctl> b",
       0,
       0,
       {261, 262, 261, 307, 264, 272, 267, 308, 261, 263},
       "a <ctl> b"},
      {"\n", 0, 0, {261, 15}, "\n"},
      {"\t", 0, 0, {261, 14}, "\t"},
      {"a\nb", 0, 0, {261, 262, 15, 263}, "a\nb"},
      {"  leading", 0, 0, {297, 261, 267, 265, 262, 271, 305}, "  leading"},
      {"trailing  ", 0, 0, {280, 270, 262, 274, 267, 305, 297}, "trailing  "},
      {"sing in", 0, 0, {306, 305, 304}, "sing in"},
      {"wing", 0, 0, {288, 305}, "wing"},
      {"\342\226\201hello", 0, 0, {261, 287}, " hello"},
      {"\377", 0, 0, {261, 260}, "\377"},
      {"\342a", 0, 0, {261, 231, 102}, "\342a"},
      {"a\342 b",
       0,
       0,
       {261, 262, 231, 231, 155, 134, 263},
       "a\342\342\226\201b"},
      {"\360\237\230", 0, 0, {261, 245, 164, 157}, "\360\237\230"},
      {"\200hello", 0, 0, {261, 133, 281, 286}, "\200hello"},
      {"", 1, 0, {}, ""},
      {"hello world", 1, 0, {287, 292}, "hello world"},
      {"Hello world", 1, 0, {261, 77, 265, 286, 292}, "Hello world"},
      {" hello", 1, 0, {261, 287}, " hello"},
      {"hello  world", 1, 0, {287, 261, 292}, "hello  world"},
      {"   ", 1, 0, {298}, "   "},
      {" ", 1, 0, {297}, " "},
      {"abc", 1, 0, {261, 293, 264}, "abc"},
      {"bca", 1, 0, {261, 294, 262}, "bca"},
      {"abcbc", 1, 0, {261, 293, 264, 294}, "abcbc"},
      {"xyz", 1, 0, {261, 276, 296}, "xyz"},
      {"zxyz", 1, 0, {261, 278, 276, 296}, "zxyz"},
      {"the", 1, 0, {282}, "the"},
      {"the hello", 1, 0, {282, 287}, "the hello"},
      {"thello", 1, 0, {282, 286}, "thello"},
      {"\346\227\245\346\234\254",
       1,
       0,
       {261, 301},
       "\346\227\245\346\234\254"},
      {"\346\227\245\346\234\254\350\252\236",
       1,
       0,
       {261, 301, 237, 175, 163},
       "\346\227\245\346\234\254\350\252\236"},
      {"\303\251", 1, 0, {261, 302}, "\303\251"},
      {"e\314\201", 1, 0, {261, 265, 209, 134}, "e\314\201"},
      {"\360\237\230\200", 1, 0, {261, 245, 164, 157, 133}, "\360\237\230\200"},
      {"a\360\237\230\200b",
       1,
       0,
       {261, 262, 245, 164, 157, 133, 263},
       "a\360\237\230\200b"},
      {"<tool>", 1, 0, {4}, "<tool>"},
      {"a<tool>b", 1, 0, {261, 262, 4, 261, 263}, "a<tool> b"},
      {"<tool><tool>", 1, 0, {4, 4}, "<tool><tool>"},
      {"<s>", 1, 0, {1}, "<s>"},
      {"a<s>b", 1, 0, {261, 262, 1, 261, 263}, "a<s> b"},
      {"<s>hello", 1, 0, {1, 287}, "<s> hello"},
      {"hello</s>", 1, 0, {287, 2}, "hello</s>"},
      {"</s>", 1, 0, {2}, "</s>"},
      {"<ctl>", 1, 0, {3}, "<ctl>"},
      {"a <ctl> b", 1, 0, {261, 262, 261, 3, 297, 263}, "a <ctl>  b"},
      {"\n", 1, 0, {261, 15}, "\n"},
      {"\t", 1, 0, {261, 14}, "\t"},
      {"a\nb", 1, 0, {261, 262, 15, 263}, "a\nb"},
      {"  leading", 1, 0, {297, 261, 267, 265, 262, 271, 305}, "  leading"},
      {"trailing  ", 1, 0, {280, 270, 262, 274, 267, 305, 297}, "trailing  "},
      {"sing in", 1, 0, {306, 305, 304}, "sing in"},
      {"wing", 1, 0, {288, 305}, "wing"},
      {"\342\226\201hello", 1, 0, {261, 287}, " hello"},
      {"\377", 1, 0, {261, 260}, "\377"},
      {"\342a", 1, 0, {261, 231, 102}, "\342a"},
      {"a\342 b",
       1,
       0,
       {261, 262, 231, 231, 155, 134, 263},
       "a\342\342\226\201b"},
      {"\360\237\230", 1, 0, {261, 245, 164, 157}, "\360\237\230"},
      {"\200hello", 1, 0, {261, 133, 281, 286}, "\200hello"},
      {"hello world", 0, 1, {1, 287, 292}, " hello world"},
      {"", 0, 1, {1}, ""},
      {" x", 0, 1, {1, 297, 276}, "  x"},
  };
  return *cases;
}

TEST_F(SpmTokenizerTest, MatchesLlamaCpp) {
  ASSERT_GE(LlamaCppCases().size(), 80u);
  for (const LlamaCppCase& c : LlamaCppCases()) {
    EXPECT_EQ(tok_->Encode(c.text, c.special, c.add_bos), c.ids)
        << "special=" << c.special << " add_bos=" << c.add_bos << " text=\""
        << c.text << "\"";
    // llama.cpp keeps the space prefix after a leading control token; see
    // DecodeDropsTheSpacePrefixAfterBos.
    if (!c.ids.empty() && tok_->token_type(c.ids[0]) == TokenType::kControl) {
      continue;
    }
    EXPECT_EQ(tok_->Decode(c.ids, c.special), c.decoded) << c.text;
  }
}

TEST_F(SpmTokenizerTest, MergesFollowTheMergedPiecesScore) {
  // "yz" (-45) beats "xy" (-50) although "xy" comes first.
  EXPECT_THAT(tok_->Encode("xyz", false),
              ElementsAre(Id("\u2581"), Id("x"), Id("yz")));
  // The chain ▁h -> ▁he (via "he") -> ▁hello.
  EXPECT_THAT(tok_->Encode("hello world", false),
              ElementsAre(Id("\u2581hello"), Id("\u2581world")));
}

TEST_F(SpmTokenizerTest, EqualScoresMergeLeftmostFirst) {
  // "ab" and "bc" both score -40: in "abc" the left pair wins, in "bca"
  // only "bc" exists.
  EXPECT_THAT(tok_->Encode("abc", false),
              ElementsAre(Id("\u2581"), Id("ab"), Id("c")));
  EXPECT_THAT(tok_->Encode("abcbc", false),
              ElementsAre(Id("\u2581"), Id("ab"), Id("c"), Id("bc")));
}

TEST_F(SpmTokenizerTest, SpacesBecomeMarkersWithAPrefix) {
  EXPECT_THAT(tok_->Encode(" hello", false),
              ElementsAre(Id("\u2581"), Id("\u2581hello")));
  EXPECT_THAT(tok_->Encode("   ", false),
              ElementsAre(Id("\u2581\u2581\u2581\u2581")));
  EXPECT_THAT(tok_->Encode("", false), ElementsAre());
  // The prefix also follows every special token, user-defined ones too.
  EXPECT_THAT(tok_->Encode("<s>hello", true),
              ElementsAre(kBos, Id("\u2581hello")));
  EXPECT_THAT(tok_->Encode("a<tool>b", false),
              ElementsAre(Id("\u2581"), Id("a"), kTool, Id("\u2581"), Id("b")));
  VocabData v = TinySpmVocab();
  v.add_space_prefix = false;
  auto no_prefix = Make(std::move(v));
  EXPECT_THAT(no_prefix->Encode("hello world", false),
              ElementsAre(Id("he"), Id("llo"), Id("\u2581world")));
}

TEST_F(SpmTokenizerTest, ByteFallback) {
  // 語 (E8 AA 9E) has no piece; 日本 has.
  EXPECT_THAT(tok_->Encode("\u65e5\u672c\u8a9e", false),
              ElementsAre(Id("\u2581"), Id("\u65e5\u672c"), ByteId(0xE8),
                          ByteId(0xAA), ByteId(0x9E)));
  EXPECT_EQ(tok_->TokenToPiece(ByteId(0xE8)), "\xE8");
  EXPECT_EQ(tok_->Decode(tok_->Encode("\u65e5\u672c\u8a9e", false)),
            "\u65e5\u672c\u8a9e");
  // Invalid UTF-8 is kept byte for byte; a lead byte claims what follows
  // (here the "a"), as llama.cpp splits.
  EXPECT_THAT(tok_->Encode("\xE2"
                           "a",
                           false),
              ElementsAre(Id("\u2581"), ByteId(0xE2), ByteId('a')));
  EXPECT_EQ(tok_->Decode(tok_->Encode("\xFF\x80", false)), "\xFF\x80");
}

TEST_F(SpmTokenizerTest, MissingByteTokensBecomeUnknown) {
  VocabData v;
  v.model = "llama";
  v.tokens = {"<unk>", "a"};
  v.token_types = {TokenType::kUnknown, TokenType::kNormal};
  v.unk_id = 0;
  auto tok = Make(v);
  EXPECT_THAT(tok->Encode("ab", false), ElementsAre(1, kUnk));
  v.unk_id = -1;
  auto no_unk = Make(v);
  EXPECT_THAT(no_unk->Encode("ab", false), ElementsAre(1));
}

TEST_F(SpmTokenizerTest, SpecialTokens) {
  // User-defined tokens are always split out; control tokens only with
  // parse_special. Plain text may still merge into a control token's text,
  // as llama.cpp allows.
  EXPECT_THAT(tok_->Encode("<tool><tool>", false), ElementsAre(kTool, kTool));
  EXPECT_THAT(tok_->Encode("<ctl>", true), ElementsAre(kCtl));
  EXPECT_THAT(tok_->Encode("hello</s>", false),
              ElementsAre(Id("\u2581hello"), kEos));
  std::vector<int32_t> plain = tok_->Encode("<ctl>", false);
  EXPECT_THAT(plain, ::testing::Not(::testing::Contains(kCtl)));
  EXPECT_EQ(tok_->Decode(plain), "<ctl>");
  EXPECT_EQ(tok_->Decode(std::vector<int32_t>{kCtl}), "");
  EXPECT_EQ(tok_->TokenToPiece(kCtl, true), "<ctl>");
  EXPECT_EQ(tok_->TokenToPiece(kTool), "<tool>");
}

// Segments (template text, then content) encode as their concatenation
// would with only the template's control tokens special: one space prefix
// per stretch between special tokens, merges across segment boundaries,
// and control-token text in content stays text.
TEST_F(SpmTokenizerTest, SegmentsEncodeAsTheWholeText) {
  const std::vector<Tokenizer::TextSegment> segments = {
      {"<ctl>hel", true}, {"lo <ctl>", false}, {" world<ctl>", true}};
  const std::vector<int32_t> got = tok_->EncodeSegments(segments);
  std::vector<int32_t> want = {kCtl};
  for (int32_t id : tok_->Encode("hello <ctl> world", false)) {
    want.push_back(id);
  }
  want.push_back(kCtl);
  EXPECT_EQ(got, want);
  // Encoded one by one, "hel" and "lo" would each get a prefix marker.
  std::vector<int32_t> apart;
  for (const auto& s : segments) {
    for (int32_t id : tok_->Encode(s.text, s.parse_special)) apart.push_back(id);
  }
  EXPECT_NE(got, apart);
  EXPECT_EQ(tok_->Decode(got, true), "<ctl>hello <ctl> world<ctl>");
}

TEST_F(SpmTokenizerTest, AddSpecial) {
  EXPECT_THAT(tok_->Encode("", false, /*add_special=*/true), ElementsAre(kBos));
  EXPECT_THAT(tok_->Encode("hello", false, true),
              ElementsAre(kBos, Id("\u2581hello")));
  VocabData v = TinySpmVocab();
  v.add_bos = false;
  v.add_eos = true;
  auto eos = Make(std::move(v));
  EXPECT_THAT(eos->Encode("hello", false, true),
              ElementsAre(Id("\u2581hello"), kEos));
}

TEST_F(SpmTokenizerTest, DecodeDropsTheSpacePrefixAfterBos) {
  // As SentencePiece decodes: the first text after leading control tokens
  // loses the prefix, so the round trip holds with add_special too.
  // (llama.cpp's llama_detokenize gives " hello world" here.)
  for (const char* text : {"hello world", " x", "", "  two", "日本"}) {
    EXPECT_EQ(tok_->Decode(tok_->Encode(text, false, true)), text) << text;
    EXPECT_EQ(tok_->Decode(tok_->Encode(text, false)), text) << text;
  }
  EXPECT_EQ(tok_->Decode(tok_->Encode("<s>hello", true), true), "<s>hello");
  // Pieces never strip: a piece continues what came before.
  EXPECT_EQ(tok_->TokenToPiece(Id("\u2581hello")), " hello");
  // Only at the start.
  const std::vector<int32_t> two = {Id("\u2581hello"), Id("\u2581world")};
  EXPECT_EQ(tok_->Decode(two), "hello world");
}

TEST_F(SpmTokenizerTest, StreamingHoldsBackAByteFallbackEmoji) {
  // U+1F600 has no piece: four byte tokens, one character.
  std::vector<int32_t> ids = tok_->Encode("a\U0001F600b", false);
  ASSERT_THAT(ids,
              ElementsAre(Id("\u2581"), Id("a"), ByteId(0xF0), ByteId(0x9F),
                          ByteId(0x98), ByteId(0x80), Id("b")));
  StreamingDetokenizer detok(*tok_);
  EXPECT_EQ(detok.Push(ids[0]), " ");
  EXPECT_EQ(detok.Push(ids[1]), "a");
  EXPECT_EQ(detok.Push(ids[2]), "");
  EXPECT_EQ(detok.Push(ids[3]), "");
  EXPECT_EQ(detok.Push(ids[4]), "");
  EXPECT_EQ(detok.pending_bytes(), 3u);
  EXPECT_EQ(detok.Push(ids[5]), "\U0001F600");
  EXPECT_EQ(detok.Push(ids[6]), "b");
  EXPECT_EQ(detok.Flush(), "");
}

TEST_F(SpmTokenizerTest, Metadata) {
  EXPECT_EQ(tok_->vocab_size(),
            kFirstByte + 256 + static_cast<int32_t>(TinyPieces().size()));
  EXPECT_EQ(tok_->bos_id(), kBos);
  EXPECT_EQ(tok_->eos_id(), kEos);
  EXPECT_TRUE(tok_->IsEndOfGeneration(kEos));
  EXPECT_FALSE(tok_->IsEndOfGeneration(kBos));
  EXPECT_EQ(tok_->token_type(ByteId(0)), TokenType::kByte);
  EXPECT_EQ(tok_->TokenToPiece(kUnk), "");
  EXPECT_EQ(tok_->TokenToPiece(kUnk, true), "<unk>");
}

TEST_F(SpmTokenizerTest, EndOfTurnEndsGeneration) {
  VocabData v = TinySpmVocab();
  v.tokens.push_back("<end_of_turn>");
  v.token_types.push_back(TokenType::kControl);
  v.scores.push_back(0.0f);
  auto tok = Make(std::move(v));
  EXPECT_TRUE(tok->IsEndOfGeneration(tok->vocab_size() - 1));
}

TEST_F(SpmTokenizerTest, CreateRejectsBadScores) {
  VocabData v = TinySpmVocab();
  v.scores.pop_back();
  EXPECT_THAT(Tokenizer::Create(v).status().message(), HasSubstr("scores"));
  v.scores.clear();  // no scores: all 0, as llama.cpp reads such a GGUF
  EXPECT_TRUE(Tokenizer::Create(v).ok());
}

// The vocab as a GGUF without the optional keys: llama.cpp's defaults
// (add_bos, add_space_prefix, bos 1, eos 2, unk 0) apply.
TEST(SpmTokenizerGgufTest, FromGgufAppliesLlamaDefaults) {
  VocabData v = TinySpmVocab();
  GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("tokenizer.ggml.model", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", v.tokens);
  w.AddFloat32Array("tokenizer.ggml.scores", v.scores);
  std::vector<int32_t> types;
  for (TokenType t : v.token_types) types.push_back(static_cast<int32_t>(t));
  w.AddInt32Array("tokenizer.ggml.token_type", types);
  auto file = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(file.ok()) << file.status();
  auto tok = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), kBos);
  EXPECT_EQ((*tok)->eos_id(), kEos);
  auto reference = Make(TinySpmVocab());
  EXPECT_EQ((*tok)->Encode("hello world", false, true),
            reference->Encode("hello world", false, true));
  EXPECT_THAT((*tok)->Encode("\xFF", false), ElementsAre(261, ByteId(0xFF)));

  // Gemma-style keys override them.
  w.AddBool("tokenizer.ggml.add_space_prefix", false);
  w.AddBool("tokenizer.ggml.add_bos_token", false);
  w.AddUint32("tokenizer.ggml.bos_token_id", kCtl);
  auto gemma_like = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(gemma_like.ok());
  auto tok2 = Tokenizer::FromGguf(**gemma_like);
  ASSERT_TRUE(tok2.ok()) << tok2.status();
  EXPECT_EQ((*tok2)->bos_id(), kCtl);
  EXPECT_EQ((*tok2)->Encode("hello", false, true),
            (*tok2)->Encode("hello", false));
  EXPECT_THAT((*tok2)->Encode("hello", false),
              ElementsAre(261 + 20, 261 + 25));  // he llo
}

}  // namespace
}  // namespace kvsession::runtime
