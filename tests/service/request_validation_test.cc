#include "service/request_validation.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsession::service {
namespace {

using ::testing::HasSubstr;

TEST(Utf8Test, AcceptsValidAndRejectsMalformed) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC3("));             // bad continuation
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));          // overlong NUL
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\x80"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xFF"));
  EXPECT_FALSE(IsValidUtf8("\x80"));
}

v1::ChatRequest Good() {
  v1::ChatRequest r;
  r.set_session_id("s-1");
  v1::Message* m = r.add_messages();
  m->set_role("user");
  m->set_content("hi");
  return r;
}

TEST(RequestValidationTest, GoodRequestPasses) {
  EXPECT_TRUE(ValidateChatRequest(Good(), ValidationLimits()).ok());
}

TEST(RequestValidationTest, InvalidUtf8ContentNamesTheField) {
  v1::ChatRequest r = Good();
  r.mutable_messages(0)->set_content("\xC3(");
  absl::Status s = ValidateChatRequest(r, ValidationLimits());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("messages[0].content"));
}

TEST(RequestValidationTest, LimitsComeFromOptions) {
  ValidationLimits limits;
  limits.max_messages = 1;
  v1::ChatRequest r = Good();
  *r.add_messages() = r.messages(0);
  EXPECT_THAT(ValidateChatRequest(r, limits).message(), HasSubstr("at most 1"));
  limits = ValidationLimits();
  limits.max_request_bytes = 3;
  r = Good();
  r.mutable_messages(0)->set_content("four");
  EXPECT_THAT(ValidateChatRequest(r, limits).message(), HasSubstr("at most 3"));
}

TEST(RequestValidationTest, SamplingDefaultsAndRanges) {
  v1::SamplingParams p;
  absl::StatusOr<runtime::SamplingParams> sp = ToSamplingParams(p);
  ASSERT_TRUE(sp.ok());
  EXPECT_EQ(sp->temperature, 0.0f);
  EXPECT_EQ(sp->top_p, 1.0f);
  EXPECT_EQ(sp->repetition_penalty, 1.0f);
  p.set_temperature(101);
  EXPECT_THAT(ToSamplingParams(p).status().message(),
              HasSubstr("sampling.temperature"));
}

TEST(RequestValidationTest, CompleteNeedsAPromptWithinTheVocab) {
  ValidationLimits limits;
  limits.vocab_size = 10;
  v1::CompleteRequest r;
  EXPECT_THAT(ValidateCompleteRequest(r, limits).message(), HasSubstr("prompt"));
  r.mutable_tokens()->add_ids(9);
  EXPECT_TRUE(ValidateCompleteRequest(r, limits).ok());
  r.mutable_tokens()->add_ids(-1);
  EXPECT_THAT(ValidateCompleteRequest(r, limits).message(),
              HasSubstr("tokens.ids[1]"));
  r.set_text("");
  EXPECT_THAT(ValidateCompleteRequest(r, limits).message(), HasSubstr("text"));
}

}  // namespace
}  // namespace kvsession::service
