// Opens the default model (SmolLM2-135M-Instruct Q4_1) named by the
// KVSESSION_MODEL environment variable and checks what the runtime relies on.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ggml_type.h"
#include "runtime/gguf.h"

namespace kvsession::runtime {
namespace {

class GgufModelTest : public testing::Test {
 protected:
  void SetUp() override {
    const char* path = std::getenv("KVSESSION_MODEL");
    if (path == nullptr || *path == '\0') {
      GTEST_SKIP() << "KVSESSION_MODEL is not set; point it at "
                      "SmolLM2-135M-Instruct.Q4_1.gguf to run this test";
    }
    absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    file_ = std::move(*f);
  }

  std::unique_ptr<GgufFile> file_;
};

TEST_F(GgufModelTest, Hyperparameters) {
  EXPECT_EQ(file_->version(), 3u);
  EXPECT_EQ(*file_->GetString("general.architecture"), "llama");
  EXPECT_EQ(*file_->GetUint("llama.block_count"), 30u);
  EXPECT_EQ(*file_->GetUint("llama.embedding_length"), 576u);
  EXPECT_EQ(*file_->GetUint("llama.attention.head_count"), 9u);
  EXPECT_EQ(*file_->GetUint("llama.attention.head_count_kv"), 3u);
  EXPECT_GT(*file_->GetFloat("llama.attention.layer_norm_rms_epsilon"), 0.0);
}

TEST_F(GgufModelTest, Tensors) {
  EXPECT_EQ(file_->tensors().size(), 272u);
  const GgufTensorInfo* embd = file_->FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, kernels::GgmlType::kQ8_0);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd->n_bytes, uint64_t{576} / 32 * 34 * 49152);

  const GgufTensorInfo* q = file_->FindTensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, kernels::GgmlType::kQ4_1);
  EXPECT_EQ(q->dims, (std::vector<int64_t>{576, 576}));

  for (const GgufTensorInfo& t : file_->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % file_->alignment(), 0u)
        << t.name;
  }
}

TEST_F(GgufModelTest, Tokenizer) {
  absl::StatusOr<std::vector<std::string>> tokens =
      file_->GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 49152u);
  absl::StatusOr<std::vector<std::string>> merges =
      file_->GetStringArray("tokenizer.ggml.merges");
  ASSERT_TRUE(merges.ok()) << merges.status();
  EXPECT_EQ(merges->size(), 48900u);
  absl::StatusOr<std::vector<int64_t>> types =
      file_->GetIntArray("tokenizer.ggml.token_type");
  ASSERT_TRUE(types.ok()) << types.status();
  EXPECT_EQ(types->size(), 49152u);
}

}  // namespace
}  // namespace kvsession::runtime
