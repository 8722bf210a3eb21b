#include "runtime/tokenizer.h"

#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/pretokenizer.h"

namespace kvsession::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// GPT-2's byte-level character for byte b.
std::string ByteChar(int b) {
  // Printable Latin-1 stands for itself; the rest map to U+0100.. in order.
  auto printable = [](int c) {
    return (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) ||
           (c >= 0xAE && c <= 0xFF);
  };
  int cp = b;
  if (!printable(b)) {
    cp = 256;
    for (int c = 0; c < b; ++c) cp += printable(c) ? 0 : 1;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

constexpr int32_t kEndOfText = 0;
constexpr int32_t kImStart = 1;
constexpr int32_t kImEnd = 2;
constexpr int32_t kTool = 3;   // user-defined "<tool>"
constexpr int32_t kShort = 4;  // control "<s>"
constexpr int32_t kLong = 5;   // control "<s>x"
constexpr int32_t kFirstByte = 6;

int32_t ByteId(char c) { return kFirstByte + static_cast<uint8_t>(c); }

// Specials, the 256 byte characters, then one token per merge result.
VocabData TinyVocab(std::vector<std::string> merges, std::string pre = "gpt2") {
  VocabData v;
  v.pre = std::move(pre);
  v.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>",
              "<tool>",        "<s>",          "<s>x"};
  v.token_types = {TokenType::kControl, TokenType::kControl,
                   TokenType::kControl, TokenType::kUserDefined,
                   TokenType::kControl, TokenType::kControl};
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(ByteChar(b));
    v.token_types.push_back(TokenType::kNormal);
  }
  for (const std::string& m : merges) {
    size_t sp = m.find(' ');
    v.tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
    v.token_types.push_back(TokenType::kNormal);
  }
  v.merges = std::move(merges);
  v.bos_id = kImStart;
  v.eos_id = kEndOfText;
  return v;
}

std::unique_ptr<Tokenizer> Make(VocabData v) {
  auto tok = Tokenizer::Create(std::move(v));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

TEST(TokenizerTest, ByteMappingRoundTripsEveryByte) {
  auto tok = Make(TinyVocab({}));
  for (int b = 0; b < 256; ++b) {
    std::string s(1, static_cast<char>(b));
    if (b < 0x80) {  // alone, higher bytes are invalid UTF-8
      EXPECT_THAT(tok->Encode(s, false), ElementsAre(kFirstByte + b)) << b;
    }
    EXPECT_EQ(tok->TokenToPiece(kFirstByte + b), s) << b;
  }
  // Space, newline and soft hyphen are the remapped ones: U+0120, U+010A,
  // U+0143.
  EXPECT_EQ(ByteChar(' '), "\xC4\xA0");
  EXPECT_EQ(ByteChar('\n'), "\xC4\x8A");
  EXPECT_EQ(ByteChar(0xAD), "\xC5\x83");
}

TEST(TokenizerTest, MultibyteTextWithoutMergesIsOneTokenPerByte) {
  auto tok = Make(TinyVocab({}));
  EXPECT_THAT(tok->Encode("\xC3\xA9", false),  // é
              ElementsAre(ByteId('\xC3'), ByteId('\xA9')));
}

TEST(TokenizerTest, MergesApplyByRank) {
  const int32_t first_merge = kFirstByte + 256;
  // "b c" outranks "a b": abc -> a + bc.
  auto bc_first = Make(TinyVocab({"b c", "a b"}));
  EXPECT_THAT(bc_first->Encode("abc", false),
              ElementsAre(ByteId('a'), first_merge));
  // The other order: abc -> ab + c.
  auto ab_first = Make(TinyVocab({"a b", "b c"}));
  EXPECT_THAT(ab_first->Encode("abc", false),
              ElementsAre(first_merge, ByteId('c')));
}

TEST(TokenizerTest, EqualRanksMergeLeftmostFirst) {
  auto tok = Make(TinyVocab({"a a"}));
  const int32_t aa = kFirstByte + 256;
  EXPECT_THAT(tok->Encode("aaa", false), ElementsAre(aa, ByteId('a')));
  EXPECT_THAT(tok->Encode("aaaa", false), ElementsAre(aa, aa));
}

TEST(TokenizerTest, MergesChainAcrossResults) {
  // h e -> he, l l -> ll, he ll -> hell, hell o -> hello; Ġ w -> Ġw.
  auto tok =
      Make(TinyVocab({"h e", "l l", "he ll", "hell o", ByteChar(' ') + " w"}));
  const int32_t hello = kFirstByte + 256 + 3;
  const int32_t space_w = kFirstByte + 256 + 4;
  EXPECT_THAT(tok->Encode("hello wo", false),
              ElementsAre(hello, space_w, ByteId('o')));
  EXPECT_EQ(tok->Decode(tok->Encode("hello wo", false)), "hello wo");
  EXPECT_EQ(tok->TokenToPiece(space_w), " w");
}

TEST(TokenizerTest, MergesDoNotCrossPreTokens) {
  // "o Ġ" would merge across the boundary of "o| o" if merges crossed it.
  auto tok = Make(TinyVocab({"o " + ByteChar(' ')}));
  EXPECT_THAT(tok->Encode("o o", false),
              ElementsAre(ByteId('o'), ByteId(' '), ByteId('o')));
}

TEST(TokenizerTest, SpecialTokensParsedOnlyWhenAsked) {
  auto tok = Make(TinyVocab({}));
  const std::string text = "<|im_start|>hi<|im_end|>";
  EXPECT_THAT(tok->Encode(text, true),
              ElementsAre(kImStart, ByteId('h'), ByteId('i'), kImEnd));
  std::vector<int32_t> plain = tok->Encode(text, false);
  EXPECT_EQ(plain.size(), text.size());  // one byte token each, no merges
  for (int32_t id : plain) EXPECT_GE(id, kFirstByte);
  EXPECT_EQ(tok->Decode(plain), text);
}

TEST(TokenizerTest, LongestSpecialTokenWins) {
  auto tok = Make(TinyVocab({}));
  EXPECT_THAT(tok->Encode("<s>x<s>y", true),
              ElementsAre(kLong, kShort, ByteId('y')));
}

TEST(TokenizerTest, UserDefinedTokensAreAlwaysMatched) {
  // As in HF tokenizers and llama.cpp: added (non-special) tokens are split
  // out even when control tokens are not.
  auto tok = Make(TinyVocab({}));
  EXPECT_THAT(tok->Encode("a<tool>b", false),
              ElementsAre(ByteId('a'), kTool, ByteId('b')));
  EXPECT_EQ(tok->Decode(tok->Encode("a<tool>b", false)), "a<tool>b");
}

TEST(TokenizerTest, DecodeHidesControlTokensUnlessRendered) {
  auto tok = Make(TinyVocab({}));
  std::vector<int32_t> ids = {kImStart, ByteId('h'), kImEnd};
  EXPECT_EQ(tok->Decode(ids), "h");
  EXPECT_EQ(tok->Decode(ids, /*render_special=*/true),
            "<|im_start|>h<|im_end|>");
  EXPECT_EQ(tok->TokenToPiece(kImEnd), "");
  EXPECT_EQ(tok->TokenToPiece(kImEnd, true), "<|im_end|>");
  EXPECT_EQ(tok->TokenToPiece(kTool), "<tool>");
  EXPECT_EQ(tok->TokenToPiece(-1), "");
  EXPECT_EQ(tok->TokenToPiece(1 << 20), "");
}

TEST(TokenizerTest, AddSpecialFollowsVocabFlags) {
  VocabData v = TinyVocab({});
  v.add_bos = true;
  v.add_eos = true;
  auto tok = Make(std::move(v));
  EXPECT_THAT(tok->Encode("a", false, /*add_special=*/true),
              ElementsAre(kImStart, ByteId('a'), kEndOfText));
  EXPECT_THAT(tok->Encode("a", false), ElementsAre(ByteId('a')));
}

TEST(TokenizerTest, Metadata) {
  auto tok = Make(TinyVocab({"a b"}));
  EXPECT_EQ(tok->vocab_size(), kFirstByte + 257);
  EXPECT_EQ(tok->bos_id(), kImStart);
  EXPECT_EQ(tok->eos_id(), kEndOfText);
  EXPECT_TRUE(tok->IsEndOfGeneration(kImEnd));
  EXPECT_TRUE(tok->IsEndOfGeneration(kEndOfText));
  EXPECT_FALSE(tok->IsEndOfGeneration(kImStart));
  EXPECT_FALSE(tok->IsEndOfGeneration(-3));
  EXPECT_EQ(tok->FindToken("<|im_end|>"), kImEnd);
  EXPECT_EQ(tok->FindToken("ab"), kFirstByte + 256);
  EXPECT_EQ(tok->FindToken("nope"), std::nullopt);
  EXPECT_EQ(tok->token_type(kTool), TokenType::kUserDefined);
  EXPECT_EQ(tok->token_type(kFirstByte), TokenType::kNormal);
}

TEST(TokenizerTest, MissingByteTokensAreDropped) {
  // Never the unknown token, which byte-level vocabs alias to end-of-text.
  VocabData v;
  v.tokens = {"<unk>", "a", "b"};
  v.token_types = {TokenType::kUnknown, TokenType::kNormal, TokenType::kNormal};
  v.unk_id = 0;
  auto tok = Make(v);
  EXPECT_THAT(tok->Encode("a\xC3\xA9z b", false), ElementsAre(1, 2));
  EXPECT_THAT(tok->Encode("<unk>", false), ElementsAre());
}

TEST(TokenizerTest, InvalidUtf8BecomesReplacementCharacter) {
  // One U+FFFD per offending byte, as llama.cpp reads its input; valid
  // sequences around them are kept.
  auto tok = Make(TinyVocab({}, "smollm"));
  EXPECT_EQ(tok->Encode("a\xFF\xC3 \x80z\xF0\x9F", false),
            tok->Encode("a\uFFFD\uFFFD \uFFFDz\uFFFD\uFFFD", false));
  // Overlong forms and surrogates are invalid too.
  EXPECT_EQ(tok->Decode(tok->Encode("\xC0\x80\xED\xA0\x80", false)),
            "\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD");
  const std::string valid = "\xF0\x9F\x98\x80 \xE2\x82\xAC";
  EXPECT_EQ(tok->Decode(tok->Encode(valid, false)), valid);
}

TEST(TokenizerTest, CreateRejectsBadVocabs) {
  VocabData v = TinyVocab({});
  v.model = "bert";
  EXPECT_THAT(Tokenizer::Create(v).status().message(), HasSubstr("bert"));
  v = TinyVocab({});
  v.pre = "klingon";
  EXPECT_THAT(Tokenizer::Create(v).status().message(), HasSubstr("klingon"));
  v = TinyVocab({});
  v.merges = {"ab"};
  EXPECT_FALSE(Tokenizer::Create(v).ok());
  v = TinyVocab({});
  v.eos_id = 100000;
  EXPECT_THAT(Tokenizer::Create(v).status().message(), HasSubstr("eos"));
  v = TinyVocab({});
  v.token_types.pop_back();
  EXPECT_FALSE(Tokenizer::Create(v).ok());
  EXPECT_FALSE(Tokenizer::Create(VocabData{}).ok());
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  auto tok = Make(TinyVocab({"h e", "l l", "he ll", "hell o"}));
  const std::string text = "hello hello, hello! 123 hello";
  const std::vector<int32_t> expected = tok->Encode(text, false);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i)
        EXPECT_EQ(tok->Encode(text, false), expected);
    });
  }
  for (auto& t : threads) t.join();
}

// --- StreamingDetokenizer ---

TEST(StreamingDetokenizerTest, HoldsBackSplitMultibyteCharacter) {
  auto tok = Make(TinyVocab({}));
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600, 4 bytes
  std::vector<int32_t> ids = tok->Encode("a" + emoji + "b", false);
  ASSERT_EQ(ids.size(), 6u);
  StreamingDetokenizer detok(*tok);
  EXPECT_EQ(detok.Push(ids[0]), "a");
  EXPECT_EQ(detok.Push(ids[1]), "");
  EXPECT_EQ(detok.Push(ids[2]), "");
  EXPECT_EQ(detok.Push(ids[3]), "");
  EXPECT_EQ(detok.Push(ids[4]), emoji);
  EXPECT_EQ(detok.Push(ids[5]), "b");
  EXPECT_EQ(detok.Flush(), "");
}

TEST(StreamingDetokenizerTest, TokensSpanningCharacterBoundaries) {
  // Merges that cut the emoji into 1 + 3 bytes.
  auto tok =
      Make(TinyVocab({ByteChar(0x9F) + " " + ByteChar(0x98),
                      ByteChar(0x9F) + ByteChar(0x98) + " " + ByteChar(0x80)}));
  const std::string text = "\xF0\x9F\x98\x80\xC3\xA9";
  std::vector<int32_t> ids = tok->Encode(text, false);
  ASSERT_EQ(ids.size(), 4u);
  StreamingDetokenizer detok(*tok);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = detok.Push(id);
    EXPECT_TRUE(piece.empty() || piece == "\xF0\x9F\x98\x80" ||
                piece == "\xC3\xA9")
        << piece.size();
    out += piece;
  }
  EXPECT_EQ(out + detok.Flush(), text);
}

TEST(StreamingDetokenizerTest, FlushReplacesIncompleteSequence) {
  auto tok = Make(TinyVocab({}));
  StreamingDetokenizer detok(*tok);
  EXPECT_EQ(detok.Push(ByteId('\xF0')), "");
  EXPECT_EQ(detok.Push(ByteId('\x9F')), "");
  EXPECT_EQ(detok.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(detok.Flush(), "");
  EXPECT_EQ(detok.Push(ByteId('x')), "x");
}

TEST(StreamingDetokenizerTest, InvalidBytesBecomeReplacementAtOnce) {
  auto tok = Make(TinyVocab({}));
  StreamingDetokenizer detok(*tok);
  EXPECT_EQ(detok.Push(ByteId('\xFF')), "\xEF\xBF\xBD");  // never valid
  EXPECT_EQ(detok.Push(ByteId('\xE2')), "");
  // A broken sequence: the lead byte is replaced, the ASCII kept.
  EXPECT_EQ(detok.Push(ByteId('A')),
            "\xEF\xBF\xBD"
            "A");
  // Surrogates (ED A0..) and overlongs (C0) are invalid too.
  EXPECT_EQ(detok.Push(ByteId('\xED')), "");
  EXPECT_EQ(detok.Push(ByteId('\xA0')), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(detok.Push(ByteId('\xC0')), "\xEF\xBF\xBD");
  EXPECT_EQ(detok.Flush(), "");
}

TEST(StreamingDetokenizerTest, RenderSpecial) {
  auto tok = Make(TinyVocab({}));
  StreamingDetokenizer plain(*tok);
  EXPECT_EQ(plain.Push(kImEnd), "");
  StreamingDetokenizer shown(*tok, /*render_special=*/true);
  EXPECT_EQ(shown.Push(kImEnd), "<|im_end|>");
}

// --- PreTokenizer ---

std::vector<std::string> Split(std::string_view pre, std::string_view text) {
  auto p = PreTokenizer::Create(pre);
  EXPECT_TRUE(p.ok()) << p.status();
  std::vector<std::string_view> pieces;
  (*p)->Split(text, &pieces);
  return {pieces.begin(), pieces.end()};
}

TEST(PreTokenizerTest, SmolLmSplitsDigitsAndWords) {
  EXPECT_THAT(Split("smollm", "Hello world! 123"),
              ElementsAre("Hello", " world", "!", " ", "1", "2", "3"));
  EXPECT_THAT(Split("smollm", "I'm here"), ElementsAre("I", "'m", " here"));
  // Contractions are case-sensitive in the GPT-2 regex.
  EXPECT_THAT(Split("smollm", "WE'LL"), ElementsAre("WE", "'", "LL"));
  EXPECT_THAT(Split("smollm", "a   b  "), ElementsAre("a", "  ", " b", "  "));
  EXPECT_THAT(Split("smollm", "x\n\ny"), ElementsAre("x", "\n", "\n", "y"));
}

TEST(PreTokenizerTest, Gpt2KeepsNumbersTogether) {
  EXPECT_THAT(Split("gpt2", "abc 12345."), ElementsAre("abc", " 12345", "."));
}

TEST(PreTokenizerTest, Llama3) {
  EXPECT_THAT(Split("llama3", "WE'LL 12345!!\n\n  x"),
              ElementsAre("WE", "'LL", " ", "123", "45", "!!\n\n", " ", " x"));
  EXPECT_THAT(Split("llama-bpe", "a \n\n b"), ElementsAre("a", " \n\n", " b"));
  EXPECT_THAT(Split("llama3", "(hello)"), ElementsAre("(hello", ")"));
}

TEST(PreTokenizerTest, Qwen2SplitsSingleDigits) {
  EXPECT_THAT(Split("qwen2", "x 2024"),
              ElementsAre("x", " ", "2", "0", "2", "4"));
}

TEST(PreTokenizerTest, DefaultSplitsPunctuationFirst) {
  EXPECT_THAT(Split("default", "a, b"), ElementsAre("a", ",", " b"));
}

TEST(PreTokenizerTest, UnicodeCategories) {
  // CJK letters, a combining mark after a letter, and ideographic space.
  EXPECT_THAT(Split("smollm", "日本語 e\xCC\x81"),
              ElementsAre("日本語", " e", "\xCC\x81"));
  EXPECT_THAT(Split("smollm",
                    "a\xE3\x80\x80"
                    "b"),
              ElementsAre("a", "\xE3\x80\x80", "b"));
}

TEST(PreTokenizerTest, PiecesCoverInvalidUtf8) {
  const std::string text = "ab\xFF\xFE cd\xC3";
  std::string joined;
  for (const std::string& p : Split("llama3", text)) joined += p;
  EXPECT_EQ(joined, text);
}

TEST(PreTokenizerTest, UnknownNameIsAnError) {
  EXPECT_FALSE(PreTokenizer::Create("nope").ok());
}

}  // namespace
}  // namespace kvsession::runtime
