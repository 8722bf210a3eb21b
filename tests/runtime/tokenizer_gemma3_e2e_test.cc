// Checks the SentencePiece tokenizer against llama.cpp on Gemma 3's vocab
// (262,144 tokens, tokenizer.ggml.model = llama, add_space_prefix = false).
// The reference ids come from tests/runtime/make_tokenizer_vectors_gemma3.py;
// the model is the one `scripts/fetch_model.sh gemma3-270m` prints.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/chat_template.h"
#include "runtime/gguf.h"
#include "runtime/tokenizer.h"

namespace kvsession::runtime {
namespace {

using ::testing::ElementsAre;

constexpr int32_t kPad = 0;
constexpr int32_t kEos = 1;
constexpr int32_t kBos = 2;
constexpr int32_t kStartOfTurn = 105;
constexpr int32_t kEndOfTurn = 106;

struct Vector {
  bool special = false;
  bool add_bos = false;
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

const std::vector<Vector>& Vectors() {
  static const auto* vectors = [] {
    auto* v = new std::vector<Vector>();
    std::ifstream in(std::string(KVSESSION_TEST_DATA_DIR) +
                     "/tokenizer_vectors_gemma3.tsv");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string special, add_bos, hex, ids;
      std::getline(fields, special, '\t');
      std::getline(fields, add_bos, '\t');
      std::getline(fields, hex, '\t');
      std::getline(fields, ids);
      Vector row;
      row.special = special == "1";
      row.add_bos = add_bos == "1";
      row.text = Unhex(hex);
      std::istringstream id_stream(ids);
      for (int32_t id; id_stream >> id;) row.ids.push_back(id);
      v->push_back(std::move(row));
    }
    return v;
  }();
  return *vectors;
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

// Strict UTF-8 check (no overlongs, surrogates or code points past
// U+10FFFF).
bool IsValidUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    auto b = static_cast<uint8_t>(s[i]);
    size_t n = b < 0x80                 ? 1
               : b >= 0xC2 && b <= 0xDF ? 2
               : b >= 0xE0 && b <= 0xEF ? 3
               : b >= 0xF0 && b <= 0xF4 ? 4
                                        : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? b : b & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      auto c = static_cast<uint8_t>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return false;
    }
    i += n;
  }
  return true;
}

class Gemma3TokenizerE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("KVSESSION_GEMMA3_MODEL");
    if (path == nullptr) return;
    auto file = GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    auto tok = Tokenizer::FromGguf(**file);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    if (std::getenv("KVSESSION_GEMMA3_MODEL") == nullptr) {
      GTEST_SKIP() << "KVSESSION_GEMMA3_MODEL is not set";
    }
    ASSERT_NE(tokenizer_, nullptr);
  }

  // Whether the ids hold a control token that Decode hides unless asked.
  static bool HasControl(const std::vector<int32_t>& ids) {
    for (int32_t id : ids) {
      if (tokenizer_->token_type(id) == TokenType::kControl) return true;
    }
    return false;
  }

  static Tokenizer* tokenizer_;
};

Tokenizer* Gemma3TokenizerE2eTest::tokenizer_ = nullptr;

TEST_F(Gemma3TokenizerE2eTest, VocabMetadata) {
  const Tokenizer& tok = *tokenizer_;
  EXPECT_EQ(tok.vocab_size(), 262144);
  EXPECT_EQ(tok.bos_id(), kBos);
  EXPECT_EQ(tok.eos_id(), kEos);
  EXPECT_EQ(tok.FindToken("<pad>"), kPad);
  EXPECT_EQ(tok.FindToken("<start_of_turn>"), kStartOfTurn);
  EXPECT_EQ(tok.FindToken("<end_of_turn>"), kEndOfTurn);
  EXPECT_EQ(tok.token_type(kEndOfTurn), TokenType::kControl);
  EXPECT_EQ(tok.token_type(tok.FindToken("<0x41>").value_or(-1)),
            TokenType::kByte);
  EXPECT_TRUE(tok.IsEndOfGeneration(kEndOfTurn));
  EXPECT_TRUE(tok.IsEndOfGeneration(kEos));
  EXPECT_FALSE(tok.IsEndOfGeneration(kStartOfTurn));
  EXPECT_FALSE(tok.IsEndOfGeneration(kBos));
  EXPECT_FALSE(tok.IsEndOfGeneration(kPad));
  // add_bos_token is true and add_space_prefix false for Gemma.
  EXPECT_THAT(tok.Encode("Hello", false, /*add_special=*/true),
              ElementsAre(kBos, 9259));
  EXPECT_THAT(tok.Encode("Hello", false), ElementsAre(9259));
  EXPECT_EQ(tok.Decode(tok.Encode(" Hello", false)), " Hello");
  EXPECT_THAT(tok.Encode("<end_of_turn>\n", true),
              ElementsAre(kEndOfTurn, 107));
}

TEST_F(Gemma3TokenizerE2eTest, MatchesLlamaCppVectors) {
  const std::vector<Vector>& vectors = Vectors();
  ASSERT_GE(vectors.size(), 300u);
  int mismatches = 0;
  for (const Vector& v : vectors) {
    std::vector<int32_t> ids = tokenizer_->Encode(v.text, v.special, v.add_bos);
    if (ids != v.ids) ++mismatches;
    EXPECT_EQ(ids, v.ids) << "special=" << v.special << " add_bos=" << v.add_bos
                          << " text=\"" << Escaped(v.text) << "\"";
  }
  EXPECT_EQ(mismatches, 0) << "of " << vectors.size();
}

std::string SpaceMarkersAsSpaces(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 3, "\xE2\x96\x81") == 0) {
      out.push_back(' ');
      i += 3;
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

TEST_F(Gemma3TokenizerE2eTest, DecodeRoundTrips) {
  int exact = 0;
  for (const Vector& v : Vectors()) {
    // Plain text can merge into a control token ("<eos>" is one piece in
    // the vocab), which Decode hides unless rendering specials.
    const bool render = v.special || HasControl(v.ids);
    std::string decoded = tokenizer_->Decode(v.ids, render);
    if (v.add_bos && render) {
      ASSERT_TRUE(decoded.starts_with("<bos>")) << Escaped(v.text);
      decoded.erase(0, 5);
    }
    if (IsValidUtf8(v.text)) {
      // A U+2581 in the input is a space to SentencePiece.
      EXPECT_EQ(decoded, SpaceMarkersAsSpaces(v.text))
          << "special=" << v.special << " text=\"" << Escaped(v.text) << "\"";
    } else {
      // Invalid UTF-8 comes back byte for byte, except that a lead byte
      // claims the next bytes whatever they are (as in llama.cpp), so a
      // space right after it falls back to the bytes of U+2581.
      EXPECT_EQ(SpaceMarkersAsSpaces(decoded), v.text)
          << "text=\"" << Escaped(v.text) << "\"";
    }
    exact += decoded == v.text;
  }
  EXPECT_GE(exact, 500);
}

TEST_F(Gemma3TokenizerE2eTest, StreamingNeverSplitsACharacter) {
  for (const Vector& v : Vectors()) {
    if (!IsValidUtf8(v.text)) continue;  // becomes U+FFFD when streamed
    StreamingDetokenizer detok(*tokenizer_, /*render_special=*/true);
    std::string streamed;
    for (int32_t id : v.ids) {
      std::string piece = detok.Push(id);
      EXPECT_TRUE(IsValidUtf8(piece)) << Escaped(v.text);
      streamed += piece;
    }
    streamed += detok.Flush();
    EXPECT_EQ(streamed, tokenizer_->Decode(v.ids, /*render_special=*/true))
        << Escaped(v.text);
  }
}

TEST_F(Gemma3TokenizerE2eTest, ByteFallbackCharacterStreamsWhole) {
  // U+2A6D6 (CJK ext-B) has no piece: four <0xNN> tokens.
  const std::string ch = "\xF0\xAA\x9B\x96";
  std::vector<int32_t> ids = tokenizer_->Encode(ch, false);
  ASSERT_EQ(ids.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(tokenizer_->token_type(ids[i]), TokenType::kByte);
    EXPECT_EQ(tokenizer_->TokenToPiece(ids[i]), ch.substr(i, 1));
  }
  StreamingDetokenizer detok(*tokenizer_);
  EXPECT_EQ(detok.Push(ids[0]), "");
  EXPECT_EQ(detok.Push(ids[1]), "");
  EXPECT_EQ(detok.Push(ids[2]), "");
  EXPECT_EQ(detok.pending_bytes(), 3u);
  EXPECT_EQ(detok.Push(ids[3]), ch);
  EXPECT_EQ(detok.Flush(), "");
}

TEST_F(Gemma3TokenizerE2eTest, ControlTokensOnlyWithParseSpecial) {
  EXPECT_THAT(tokenizer_->Encode("<start_of_turn>user\n", true),
              ElementsAre(kStartOfTurn, 2364, 107));
  std::vector<int32_t> plain = tokenizer_->Encode("<start_of_turn>", false);
  EXPECT_GT(plain.size(), 1u);
  for (int32_t id : plain) EXPECT_NE(id, kStartOfTurn);
  EXPECT_EQ(tokenizer_->Decode(plain), "<start_of_turn>");
  const std::vector<int32_t> turn = {kStartOfTurn, kEndOfTurn};
  EXPECT_EQ(tokenizer_->Decode(turn), "");
  EXPECT_EQ(tokenizer_->Decode(turn, true), "<start_of_turn><end_of_turn>");
}

// The model bundle encodes a chat's segments (template text with control
// tokens parsed, content without) with EncodeSegments: the ids of the whole
// rendered text. For Gemma even encoding each segment alone gives them:
// every boundary falls on a special or newline token.
TEST_F(Gemma3TokenizerE2eTest, ChatSegmentsTokenizeLikeTheWholeText) {
  auto t = ChatTemplate::FromName("gemma");
  ASSERT_TRUE(t.ok());
  const std::vector<ChatMessage> chat = {
      {"system", "You are terse. Answer in   one line."},
      {"user", "  What is 2+2?\n"},
      {"assistant", "4 \xF0\x9F\x98\x80"},
      {"user", "And\t3+3?"}};
  std::vector<int32_t> by_segment;
  std::vector<Tokenizer::TextSegment> segments;
  const std::vector<ChatSegment> rendered = t->RenderSegments(chat, true);
  for (const ChatSegment& s : rendered) {
    std::vector<int32_t> ids = tokenizer_->Encode(s.text, !s.is_content);
    by_segment.insert(by_segment.end(), ids.begin(), ids.end());
    segments.push_back({s.text, !s.is_content});
  }
  EXPECT_EQ(by_segment, tokenizer_->Encode(t->Render(chat, true), true));
  EXPECT_EQ(by_segment, tokenizer_->EncodeSegments(segments));
  EXPECT_EQ(by_segment.front(), kBos);
  EXPECT_EQ(tokenizer_->Decode(by_segment, true), t->Render(chat, true));
}

}  // namespace
}  // namespace kvsession::runtime
