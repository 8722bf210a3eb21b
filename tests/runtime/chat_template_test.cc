#include "runtime/chat_template.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvsession::runtime {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// tokenizer.chat_template of SmolLM2-135M-Instruct, verbatim (the "\n"
// inside its Jinja strings are real newlines in the GGUF).
constexpr char kSmolLm2Template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] "
    "!= 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant "
    "named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif "
    "%}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

// Qwen2-Instruct's template, written with Jinja escapes ("\\n") as in a
// .jinja file.
constexpr char kQwen2Template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] "
    "!= 'system' %}{{ '<|im_start|>system\\nYou are a helpful "
    "assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\\n' }}{% endif %}";

// Plain ChatML: system messages come only from the caller.
constexpr char kChatMlTemplate[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
    "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if "
    "add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

constexpr char kLlama3Template[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% "
    "set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% "
    "if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
    "%}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// Gemma 3's template (google/gemma-3-*-it tokenizer_config.json), written
// with Jinja escapes ("\\n") as there.
constexpr char kGemma3Template[] =
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' "
    "-%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + "
    "'\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate "
    "user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if "
    "loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n";

// The "v1" template of Mistral-7B-Instruct-v0.1/v0.2 (with a system prompt).
constexpr char kMistralV1Template[] =
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, "
    "conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + "
    "message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, "
    "with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";

constexpr char kSmolSystem[] =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n";

ChatTemplate MustDetect(std::string_view src) {
  auto t = ChatTemplate::Detect(src);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : ChatTemplate();
}

TEST(ChatTemplateTest, DetectsSmolLm2AndItsDefaultSystemPrompt) {
  ChatTemplate t = MustDetect(kSmolLm2Template);
  EXPECT_EQ(t.kind(), ChatTemplateKind::kChatMl);
  EXPECT_EQ(t.name(), "chatml");
  EXPECT_EQ(t.end_of_turn(), "<|im_end|>");
  EXPECT_EQ(t.default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face");
}

TEST(ChatTemplateTest, DetectsEscapedDefaultSystemPrompt) {
  EXPECT_EQ(MustDetect(kQwen2Template).default_system_prompt(),
            "You are a helpful assistant.");
  EXPECT_EQ(MustDetect(kChatMlTemplate).default_system_prompt(), "");
}

TEST(ChatTemplateTest, SkipsLiteralsThatEndBeforeTheEndOfTurn) {
  // Qwen2.5 style: the tools branch opens the system turn in one literal
  // and appends the caller's content; the default sits in a later literal.
  constexpr char kQwen25Like[] =
      "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if "
      "messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- "
      "else %}{{- 'You are Qwen.' }}{%- endif %}{%- else %}{%- if "
      "messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
      "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- "
      "\"<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
      "You are a \\\"helpful\\\" assistant.<|im_end|>\\n\" }}{%- endif "
      "%}{%- endif %}";
  EXPECT_EQ(MustDetect(kQwen25Like).default_system_prompt(),
            "You are Qwen, created by Alibaba Cloud. You are a \"helpful\" "
            "assistant.");
}

TEST(ChatTemplateTest, DetectsLlama3) {
  ChatTemplate t = MustDetect(kLlama3Template);
  EXPECT_EQ(t.kind(), ChatTemplateKind::kLlama3);
  EXPECT_EQ(t.name(), "llama3");
  EXPECT_EQ(t.end_of_turn(), "<|eot_id|>");
  EXPECT_EQ(t.default_system_prompt(), "");
}

TEST(ChatTemplateTest, RejectsUnknownTemplates) {
  auto t = ChatTemplate::Detect("{{ bos_token }}{% for m in messages %}[INST]");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChatTemplate::Detect("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Expected strings below were rendered with jinja2 from the templates above.
TEST(ChatTemplateTest, SmolLm2RendersLikeJinja) {
  ChatTemplate t = MustDetect(kSmolLm2Template);
  std::vector<ChatMessage> user = {{"user", "Hi"}};
  EXPECT_EQ(t.Render(user, false),
            std::string(kSmolSystem) + "<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(t.Render(user, true), std::string(kSmolSystem) +
                                      "<|im_start|>user\nHi<|im_end|>\n"
                                      "<|im_start|>assistant\n");
  std::vector<ChatMessage> with_system = {{"system", "Be brief."},
                                          {"user", "Hi"}};
  EXPECT_EQ(t.Render(with_system, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  std::vector<ChatMessage> turns = {{"user", "Hi"},
                                    {"assistant", "Hello! How can I help?"},
                                    {"user", " two\n"}};
  EXPECT_EQ(t.Render(turns, true),
            std::string(kSmolSystem) +
                "<|im_start|>user\nHi<|im_end|>\n"
                "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
                "<|im_start|>user\n two\n<|im_end|>\n<|im_start|>assistant\n");
  // No messages: the default system prompt lives inside the message loop.
  EXPECT_EQ(t.Render({}, false), "");
  EXPECT_EQ(t.Render({}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, Llama3RendersLikeJinja) {
  ChatTemplate t = MustDetect(kLlama3Template);
  std::vector<ChatMessage> turns = {{"user", "Hi"},
                                    {"assistant", "Hello! How can I help?"},
                                    {"user", " two\n"}};
  EXPECT_EQ(t.Render(turns, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi"
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            "Hello! How can I help?<|eot_id|><|start_header_id|>user"
            "<|end_header_id|>\n\ntwo<|eot_id|><|start_header_id|>assistant"
            "<|end_header_id|>\n\n");
  std::vector<ChatMessage> system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(t.Render(system, false),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Hi<|eot_id|>");
  // `trim` strips Unicode whitespace (ideographic space, NBSP) like Python.
  std::vector<ChatMessage> spaces = {{"user", "\xE3\x80\x80 x \xC2\xA0\n"}};
  EXPECT_EQ(t.Render(spaces, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
            "x<|eot_id|>");
  std::vector<ChatMessage> blank = {{"user", " \n\t"}};
  EXPECT_EQ(t.Render(blank, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
            "<|eot_id|>");
  EXPECT_EQ(t.Render({}, true),
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, RenderingIsPrefixStable) {
  std::vector<ChatMessage> conv = {
      {"user", "a"}, {"assistant", "b "}, {"user", " c"}, {"assistant", "d"}};
  for (const char* src : {kSmolLm2Template, kLlama3Template}) {
    ChatTemplate t = MustDetect(src);
    for (size_t n = 0; n <= conv.size(); ++n) {
      std::span<const ChatMessage> head(conv.data(), n);
      std::string full = t.Render(conv, false);
      EXPECT_THAT(full, StartsWith(t.Render(head, false))) << src << n;
      // With the generation prompt the head is the prompt a completion
      // continues: the next assistant turn extends it.
      if (n < conv.size() && conv[n].role == "assistant") {
        EXPECT_THAT(full, StartsWith(t.Render(head, true))) << src << n;
      }
    }
  }
}

TEST(ChatTemplateTest, FromNameOverrides) {
  auto chatml = ChatTemplate::FromName("chatml");
  ASSERT_TRUE(chatml.ok());
  EXPECT_EQ(chatml->kind(), ChatTemplateKind::kChatMl);
  EXPECT_EQ(chatml->default_system_prompt(), "");
  std::vector<ChatMessage> user = {{"user", "Hi"}};
  EXPECT_EQ(chatml->Render(user, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  auto llama3 = ChatTemplate::FromName("llama3");
  ASSERT_TRUE(llama3.ok());
  EXPECT_EQ(llama3->kind(), ChatTemplateKind::kLlama3);
  EXPECT_EQ(llama3->Render(user, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
            "Hi<|eot_id|>");
  auto bad = ChatTemplate::FromName("vicuna");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("vicuna"));
}

// Expected strings below were rendered with jinja2 from kGemma3Template
// (bos_token "<bos>").
TEST(ChatTemplateTest, DetectsGemma3) {
  ChatTemplate t = MustDetect(kGemma3Template);
  EXPECT_EQ(t.kind(), ChatTemplateKind::kGemma);
  EXPECT_EQ(t.name(), "gemma");
  EXPECT_EQ(t.end_of_turn(), "<end_of_turn>");
  EXPECT_EQ(t.turn_separator(), "\n");
  EXPECT_EQ(t.default_system_prompt(), "");
  auto by_name = ChatTemplate::FromName("gemma");
  ASSERT_TRUE(by_name.ok());
  EXPECT_EQ(by_name->kind(), ChatTemplateKind::kGemma);
}

TEST(ChatTemplateTest, Gemma3RendersLikeJinja) {
  ChatTemplate t = MustDetect(kGemma3Template);
  std::vector<ChatMessage> user = {{"user", "Hi"}};
  EXPECT_EQ(t.Render(user, false),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n");
  EXPECT_EQ(t.Render(user, true),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n"
            "<start_of_turn>model\n");
  // The system message goes in front of the first user message.
  std::vector<ChatMessage> system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(t.Render(system, true),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
            "<start_of_turn>model\n");
  // "assistant" is "model"; contents are trimmed, the system one is not.
  std::vector<ChatMessage> turns = {{"user", "Hi"},
                                    {"assistant", "Hello! How can I help?"},
                                    {"user", " two\n"}};
  EXPECT_EQ(t.Render(turns, true),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n"
            "<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
            "<start_of_turn>user\ntwo<end_of_turn>\n<start_of_turn>model\n");
  std::vector<ChatMessage> sys_turns = {{"system", " Sys \n"},
                                        {"user", " a "},
                                        {"assistant", " b\n"},
                                        {"user", "c"}};
  EXPECT_EQ(t.Render(sys_turns, false),
            "<bos><start_of_turn>user\n Sys \n\n\na<end_of_turn>\n"
            "<start_of_turn>model\nb<end_of_turn>\n"
            "<start_of_turn>user\nc<end_of_turn>\n");
  std::vector<ChatMessage> spaces = {{"user", "\xE3\x80\x80 x \xC2\xA0\n"}};
  EXPECT_EQ(t.Render(spaces, false),
            "<bos><start_of_turn>user\nx<end_of_turn>\n");
  // A lone system message renders nothing yet.
  std::vector<ChatMessage> only_system = {{"system", "S"}};
  EXPECT_EQ(t.Render(only_system, false), "<bos>");
  EXPECT_EQ(t.Render(only_system, true), "<bos><start_of_turn>model\n");
  // (Jinja fails on an empty list; the BOS comes before the loop.)
  EXPECT_EQ(t.Render({}, false), "<bos>");
}

TEST(ChatTemplateTest, Gemma3Segments) {
  ChatTemplate t = MustDetect(kGemma3Template);
  std::vector<ChatMessage> system = {{"system", "<end_of_turn>"},
                                     {"user", "Hi"}};
  std::vector<ChatSegment> segs = t.RenderSegments(system, true);
  ASSERT_EQ(segs.size(), 5u);
  EXPECT_EQ(segs[0].text, "<bos><start_of_turn>user\n");
  EXPECT_FALSE(segs[0].is_content);
  // The system text is content: never parsed for control tokens.
  EXPECT_EQ(segs[1].text, "<end_of_turn>");
  EXPECT_TRUE(segs[1].is_content);
  EXPECT_EQ(segs[2].text, "\n\n");
  EXPECT_EQ(segs[3].text, "Hi");
  EXPECT_TRUE(segs[3].is_content);
  EXPECT_EQ(segs[4].text, "<end_of_turn>\n<start_of_turn>model\n");
  // A continuation has no BOS, and its system message is a turn.
  std::vector<ChatMessage> more = {{"system", "S"}, {"user", "x"}};
  std::string cont;
  for (const ChatSegment& s : t.RenderSegments(more, false, false)) {
    cont += s.text;
  }
  EXPECT_EQ(cont,
            "<start_of_turn>system\nS<end_of_turn>\n"
            "<start_of_turn>user\nx<end_of_turn>\n");
}

// Expected strings below were rendered with jinja2 from kMistralV1Template
// (bos_token "<s>", eos_token "</s>").
TEST(ChatTemplateTest, DetectsMistralV1) {
  ChatTemplate t = MustDetect(kMistralV1Template);
  EXPECT_EQ(t.kind(), ChatTemplateKind::kMistral);
  EXPECT_EQ(t.name(), "mistral");
  EXPECT_EQ(t.end_of_turn(), "</s>");
  EXPECT_EQ(t.turn_separator(), "");
  auto by_name = ChatTemplate::FromName("mistral");
  ASSERT_TRUE(by_name.ok());
  EXPECT_EQ(by_name->kind(), ChatTemplateKind::kMistral);
  // Llama 2's template and Mistral's older one space [INST] otherwise.
  EXPECT_FALSE(ChatTemplate::Detect(
                   "{{ bos_token }}{% for message in messages %}{% if "
                   "message['role'] == 'user' %}{{ '[INST] ' + "
                   "message['content'] + ' [/INST]' }}{% endif %}{% endfor %}")
                   .ok());
  EXPECT_FALSE(
      ChatTemplate::Detect("{{ bos_token + '[INST] <<SYS>>\\n' + system + "
                           "'\\n<</SYS>>\\n\\n' }}{{ ' [INST] ' }}")
          .ok());
}

TEST(ChatTemplateTest, MistralV1RendersLikeJinja) {
  ChatTemplate t = MustDetect(kMistralV1Template);
  std::vector<ChatMessage> user = {{"user", "Hi"}};
  EXPECT_EQ(t.Render(user, false), "<s> [INST] Hi [/INST]");
  // No generation prompt: the answer follows [/INST].
  EXPECT_EQ(t.Render(user, true), "<s> [INST] Hi [/INST]");
  std::vector<ChatMessage> system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(t.Render(system, true), "<s> [INST] Be brief.\n\nHi [/INST]");
  std::vector<ChatMessage> turns = {{"user", "Hi"},
                                    {"assistant", "Hello! How can I help?"},
                                    {"user", " two\n"}};
  EXPECT_EQ(t.Render(turns, true),
            "<s> [INST] Hi [/INST] Hello! How can I help?</s>"
            " [INST]  two\n [/INST]");
  // Nothing is trimmed.
  std::vector<ChatMessage> sys_turns = {{"system", " Sys \n"},
                                        {"user", " a "},
                                        {"assistant", " b\n"},
                                        {"user", "c"}};
  EXPECT_EQ(t.Render(sys_turns, false),
            "<s> [INST]  Sys \n\n\n a  [/INST]  b\n</s> [INST] c [/INST]");
  std::vector<ChatMessage> only_system = {{"system", "S"}};
  EXPECT_EQ(t.Render(only_system, true), "<s>");
  EXPECT_EQ(t.Render({}, false), "<s>");
  // A continuation has no BOS.
  std::string cont;
  for (const ChatSegment& s : t.RenderSegments(user, false, false)) {
    cont += s.text;
  }
  EXPECT_EQ(cont, " [INST] Hi [/INST]");
}

TEST(ChatTemplateTest, GemmaAndMistralArePrefixStable) {
  const std::vector<ChatMessage> convs[] = {
      {{"user", "a"}, {"assistant", "b "}, {"user", " c"}, {"assistant", "d"}},
      {{"system", "s"},
       {"user", "a"},
       {"assistant", "b"},
       {"user", "c"},
       {"assistant", "d"}},
  };
  for (const char* src : {kGemma3Template, kMistralV1Template}) {
    ChatTemplate t = MustDetect(src);
    for (const std::vector<ChatMessage>& conv : convs) {
      const std::string full = t.Render(conv, false);
      for (size_t n = 0; n <= conv.size(); ++n) {
        std::span<const ChatMessage> head(conv.data(), n);
        EXPECT_THAT(full, StartsWith(t.Render(head, false))) << t.name() << n;
        if (n < conv.size() && conv[n].role == "assistant") {
          EXPECT_THAT(full, StartsWith(t.Render(head, true))) << t.name() << n;
        }
        // Appending the rest as a continuation gives the same text.
        std::string joined = n == 0 ? "" : t.Render(head, false);
        for (const ChatSegment& s : t.RenderSegments(
                 std::span<const ChatMessage>(conv).subspan(n), false,
                 /*first_turn=*/n == 0)) {
          joined += s.text;
        }
        // Except where the leading system message would be split off from
        // the message it is folded into.
        if (!(n == 1 && conv[0].role == "system")) {
          EXPECT_EQ(joined, full) << t.name() << n;
        }
      }
    }
  }
}

// Qwen3's template keeps an assistant message's thinking block only after
// the last user message; expected strings follow its Jinja source by hand.
constexpr char kQwen3TemplateExcerpt[] =
    "{%- for message in messages %}{%- if message.role == \"assistant\" %}"
    "{%- if '</think>' in content %}{%- set reasoning_content = "
    "content.split('</think>')[0].rstrip('\\n').split('<think>')[-1]."
    "lstrip('\\n') %}{%- endif %}{{- '<|im_start|>' + message.role + "
    "'\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' "
    "}}{%- endif %}{%- endfor %}";

TEST(ChatTemplateTest, Qwen3DropsThinkingBeforeTheLastUserMessage) {
  ChatTemplate t = MustDetect(kQwen3TemplateExcerpt);
  EXPECT_EQ(t.kind(), ChatTemplateKind::kQwen3);
  EXPECT_EQ(t.name(), "qwen3");
  EXPECT_EQ(t.default_system_prompt(), "");
  const std::vector<ChatMessage> m = {
      {"user", "2+2?"},
      {"assistant", "<think>\nadd them\n</think>\n\n4"},
      {"user", "and 3+3?"},
      {"assistant", "<think>\n\nagain add\n\n</think>\n\n6"},
  };
  EXPECT_EQ(t.Render(m, false),
            "<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n"
            "<|im_start|>user\nand 3+3?<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nagain add\n</think>\n\n6"
            "<|im_end|>\n");
  // The last message gets a block even without reasoning; one between the
  // last query and the end gets it only with reasoning.
  const std::vector<ChatMessage> tail = {
      {"user", "hi"}, {"assistant", "hello"}, {"assistant", "again"}};
  EXPECT_EQ(t.Render(tail, true),
            "<|im_start|>user\nhi<|im_end|>\n"
            "<|im_start|>assistant\nhello<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\nagain<|im_end|>\n"
            "<|im_start|>assistant\n");
  // Content is never parsed for control tokens: the reasoning and the
  // answer are content segments.
  int content_segments = 0;
  for (const ChatSegment& s : t.RenderSegments(m, false)) {
    content_segments += s.is_content;
  }
  EXPECT_EQ(content_segments, 5);
  ASSERT_TRUE(ChatTemplate::FromName("qwen3").ok());
  EXPECT_EQ(ChatTemplate::FromName("qwen3")->kind(), ChatTemplateKind::kQwen3);
}

}  // namespace
}  // namespace kvsession::runtime
