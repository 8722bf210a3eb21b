#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ops.h"
#include "kernels/f16.h"

namespace kvsession::kernels::cuda {
namespace {

class DeviceBuffer final : public Buffer {
 public:
  DeviceBuffer(void* p, size_t size) : p_(p), size_(size) {}
  ~DeviceBuffer() override { cudaFree(p_); }
  void* data() override { return p_; }
  size_t size() const override { return size_; }

 private:
  void* p_;
  size_t size_;
};

class PinnedBuffer final : public Buffer {
 public:
  PinnedBuffer(void* p, size_t size) : p_(p), size_(size) {}
  ~PinnedBuffer() override { cudaFreeHost(p_); }
  void* data() override { return p_; }
  size_t size() const override { return size_; }

 private:
  void* p_;
  size_t size_;
};

size_t Align(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const Options& options) {
  std::unique_ptr<CudaBackend> b(new CudaBackend(options));
  if (absl::Status s = b->Init(); !s.ok()) return s;
  return b;
}

absl::Status CudaBackend::Init() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();  // clears the error for later callers
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda: no CUDA device (",
        e == cudaSuccess ? "none found" : cudaGetErrorString(e), ")"));
  }
  if (options_.device < 0 || options_.device >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda: device ", options_.device, " requested, ", count, " present"));
  }
  if (!IsAttentionPartition(options_.attention_partition)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda: attention partition must be 64 or 256, got ",
                     options_.attention_partition));
  }
  KVS_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  cudaDeviceProp prop{};
  KVS_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options_.device));
  device_name_ = absl::StrCat(prop.name, " (sm_", prop.major, prop.minor, ", ",
                              prop.totalGlobalMem >> 20, " MiB)");
  KVS_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  KVS_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  KVS_CUDA_RETURN_IF_ERROR(
      cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming));
  Gemm::Options go;
  go.columns = options_.gemm_columns;
  absl::StatusOr<std::unique_ptr<Gemm>> g = Gemm::Create(go, stream_);
  if (!g.ok()) return g.status();
  gemm_ = *std::move(g);
  return absl::OkStatus();
}

CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (copy_stream_ != nullptr) cudaStreamSynchronize(copy_stream_);
  gemm_.reset();
  for (void* p : {convert_, staging_dev_, static_cast<void*>(attn_ws_),
                  sample_ws_}) {
    if (p != nullptr) cudaFree(p);
  }
  for (void* p : weights_) cudaFree(p);
  for (auto& [key, e] : graphs_) {
    if (e.exec != nullptr) cudaGraphExecDestroy(e.exec);
  }
  if (fixed_host_ != nullptr) cudaFreeHost(fixed_host_);
  if (fixed_dev_ != nullptr) cudaFree(fixed_dev_);
  if (staging_host_ != nullptr) cudaFreeHost(staging_host_);
  if (staged_ != nullptr) cudaEventDestroy(staged_);
  if (copy_stream_ != nullptr) cudaStreamDestroy(copy_stream_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::Allocate(size_t bytes) {
  // A new buffer may take the place of one a recorded step used.
  ++generation_;
  void* p = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes == 0 ? 256 : bytes));
  return std::make_unique<DeviceBuffer>(p, bytes);
}

absl::StatusOr<std::unique_ptr<Buffer>> CudaBackend::AllocateHost(
    size_t bytes) {
  void* p = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(
      cudaHostAlloc(&p, bytes == 0 ? 256 : bytes, cudaHostAllocPortable));
  return std::make_unique<PinnedBuffer>(p, bytes);
}

void* CudaBackend::Grow(void** buf, size_t* cap, size_t bytes) {
  if (*cap < bytes) {
    KVS_CHECK(!capturing_) << "cuda: a recorded step grew a buffer";
    ++generation_;
    // cudaFree waits for the kernels that may still use the old buffer.
    if (*buf != nullptr) KVS_CUDA_CHECK(cudaFree(*buf));
    *buf = nullptr;
    const size_t rounded = Align(bytes + bytes / 4, size_t{1} << 20);
    KVS_CUDA_CHECK(cudaMalloc(buf, rounded));
    *cap = rounded;
  }
  return *buf;
}

namespace {
// GEMM weights live as F16 (BF16 when the file has BF16).
GgmlType GemmType(GgmlType stored) {
  return stored == GgmlType::kBF16 ? GgmlType::kBF16 : GgmlType::kF16;
}

WeightView DeviceView(const WeightView& host, GgmlType type, const void* data) {
  WeightView w;
  w.type = type;
  w.data = data;
  w.rows = host.rows;
  w.cols = host.cols;
  w.row_bytes = static_cast<size_t>(host.cols) * 2;
  return w;
}
}  // namespace

absl::Status CudaBackend::UploadWeight(const WeightView& host, GgmlType target,
                                       void* dst) {
  const int64_t n = host.rows * host.cols;
  const size_t raw = static_cast<size_t>(host.rows) * host.row_bytes;
  if (host.type == target) {
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, host.data, raw,
                                             cudaMemcpyHostToDevice, stream_));
  } else if (CanDequantize(host.type)) {
    // Quantized types are dequantized once here, on the device.
    void* src = Grow(&convert_, &convert_cap_, raw);
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(src, host.data, raw,
                                             cudaMemcpyHostToDevice, stream_));
    LaunchDequantize(host.type, src, n, target, dst, stream_);
  } else {
    std::vector<float> row(host.cols);
    std::vector<uint16_t> conv(static_cast<size_t>(n));
    for (int64_t r = 0; r < host.rows; ++r) {
      DequantizeRow(host.type,
                    static_cast<const uint8_t*>(host.data) + r * host.row_bytes,
                    row.data(), host.cols);
      QuantizeRow(target, row.data(), conv.data() + r * host.cols, host.cols);
    }
    KVS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, conv.data(), conv.size() * 2,
                                             cudaMemcpyHostToDevice, stream_));
  }
  KVS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::StatusOr<WeightView> CudaBackend::PrepareWeight(const WeightView& host) {
  const GgmlType target = GemmType(host.type);
  void* dst = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(
      cudaMalloc(&dst, static_cast<size_t>(host.rows * host.cols) * 2));
  weights_.push_back(dst);
  if (absl::Status s = UploadWeight(host, target, dst); !s.ok()) return s;
  const WeightView w = DeviceView(host, target, dst);
  if (absl::Status s = gemm_->Prepare(w); !s.ok()) return s;
  return w;
}

absl::StatusOr<std::vector<WeightView>> CudaBackend::PrepareWeights(
    std::span<const WeightView> host) {
  const GgmlType target =
      host.empty() ? GgmlType::kF16 : GemmType(host[0].type);
  bool joinable = host.size() >= 2 &&
                  host.size() <= static_cast<size_t>(kMaxSplitColumns);
  size_t bytes = 0;
  for (const WeightView& w : host) {
    joinable = joinable && GemmType(w.type) == target && w.cols == host[0].cols;
    bytes += static_cast<size_t>(w.rows * w.cols) * 2;
  }
  if (!joinable) return Backend::PrepareWeights(host);
  void* dst = nullptr;
  KVS_CUDA_RETURN_IF_ERROR(cudaMalloc(&dst, bytes));
  weights_.push_back(dst);
  std::vector<WeightView> out;
  auto* p = static_cast<uint8_t*>(dst);
  for (const WeightView& w : host) {
    if (absl::Status s = UploadWeight(w, target, p); !s.ok()) return s;
    out.push_back(DeviceView(w, target, p));
    p += static_cast<size_t>(w.rows * w.cols) * 2;
  }
  if (absl::Status s = RegisterWeights(out); !s.ok()) return s;
  return out;
}

absl::Status CudaBackend::RegisterWeights(std::span<const WeightView> ws) {
  std::vector<const WeightView*> ptrs;
  for (const WeightView& w : ws) {
    // Each alone too, so that MatMul of one of them works as well.
    if (absl::Status s = gemm_->Prepare(w); !s.ok()) return s;
    ptrs.push_back(&w);
  }
  WeightView joined;
  if (Gemm::Joined(ptrs, &joined)) {
    // Without a batch-invariant algorithm for the joined shape, MatMuls
    // runs the group as separate GEMMs: slower, never wrong.
    if (absl::Status s = gemm_->Prepare(joined); !s.ok()) {
      KVS_LOG(WARNING) << "cuda: weights of " << joined.rows << "x"
                       << joined.cols << " run apart: " << s;
    }
  }
  return absl::OkStatus();
}

void CudaBackend::CopyToHost(const void* src, void* dst, size_t bytes) {
  KVS_CUDA_CHECK(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  KVS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::CopyFromHost(const void* src, void* dst, size_t bytes) {
  KVS_CUDA_CHECK(
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  KVS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::Synchronize() { KVS_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

MemoryInfo CudaBackend::GetMemoryInfo() const {
  size_t free_b = 0, total_b = 0;
  KVS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return {static_cast<int64_t>(free_b), static_cast<int64_t>(total_b)};
}

void CudaBackend::CopyBlocks(const void* src_base, void* dst_base,
                             size_t block_bytes,
                             std::span<const BlockMove> moves) {
  std::lock_guard<std::mutex> lock(copy_mu_);
  KVS_CUDA_CHECK(cudaSetDevice(options_.device));
  const auto* src = static_cast<const uint8_t*>(src_base);
  auto* dst = static_cast<uint8_t*>(dst_base);
  // Runs of consecutive ids on both sides go as one copy.
  size_t i = 0;
  while (i < moves.size()) {
    size_t j = i + 1;
    while (j < moves.size() && moves[j].src == moves[j - 1].src + 1 &&
           moves[j].dst == moves[j - 1].dst + 1) {
      ++j;
    }
    KVS_CUDA_CHECK(cudaMemcpyAsync(
        dst + static_cast<size_t>(moves[i].dst) * block_bytes,
        src + static_cast<size_t>(moves[i].src) * block_bytes,
        (j - i) * block_bytes, cudaMemcpyDefault, copy_stream_));
    i = j;
  }
  KVS_CUDA_CHECK(cudaStreamSynchronize(copy_stream_));
}

namespace {
// Pinned staging of recorded steps: 64 tokens x 4096 blocks (64k positions
// of 16) and change.
constexpr size_t kFixedStagingBytes = size_t{3} << 20;
}  // namespace

void CudaBackend::RunStep(const StepInputs& step,
                          absl::FunctionRef<void(const StepViews&)> ops) {
  KVS_CHECK(!recording_) << "cuda: RunStep inside RunStep";
  if (Stage(step)) return;  // replayed
  StepViews v;
  v.tokens = step_.d_tokens;
  v.placement.n_tokens = step.placement.n_tokens;
  v.placement.positions = step_.d_positions;
  v.placement.block_tables = step_.d_tables;
  v.logit_rows = step_.d_logit_rows;
  v.n_logit_rows = step.n_logit_rows;
  queue_.clear();
  recording_ = true;
  ops(v);
  recording_ = false;
  Flush();
  if (!capturing_) return;
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  KVS_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  GraphEntry& e = graphs_[capture_key_];
  KVS_CUDA_CHECK(cudaGraphInstantiate(&e.exec, graph, 0));
  KVS_CUDA_CHECK(cudaGraphDestroy(graph));
  e.generation = Generation();
  ++graph_captures_;
  // Recording did not run the step: run it now.
  KVS_CUDA_CHECK(cudaGraphLaunch(e.exec, stream_));
}

bool CudaBackend::Stage(const StepInputs& in) {
  KVS_CUDA_CHECK(cudaSetDevice(options_.device));
  const TokenPlacement& p = in.placement;
  int32_t max_pos = 0;
  for (int32_t t = 0; t < p.n_tokens; ++t) {
    max_pos = std::max(max_pos, p.positions[t]);
  }

  const int32_t partition = options_.attention_partition;
  const bool eligible = options_.graphs && p.n_tokens > 0 &&
                        p.n_tokens <= options_.gemm_columns &&
                        partition % in.block_size == 0;
  if (!eligible) {
    StageEager(in, max_pos);
    return false;
  }
  int32_t n_parts = 1;
  while (n_parts < max_pos / partition + 1) n_parts *= 2;
  const int32_t max_blocks = n_parts * (partition / in.block_size);
  if (!StageFixed(in, max_blocks)) {
    StageEager(in, max_pos);
    return false;
  }
  // Attention sizes its grid and workspace for the whole bucket.
  step_.max_position = n_parts * partition - 1;

  const GraphKey key{p.n_tokens, in.n_logit_rows, n_parts, partition,
                     in.kv_base};
  if (graphs_.size() > 512 && graphs_.count(key) == 0) {
    for (auto& [k, e] : graphs_) {
      if (e.exec != nullptr) cudaGraphExecDestroy(e.exec);
    }
    graphs_.clear();
  }
  GraphEntry& e = graphs_[key];
  if (e.exec != nullptr && e.generation == Generation()) {
    KVS_CUDA_CHECK(cudaGraphLaunch(e.exec, stream_));
    ++graph_replays_;
    return true;
  }
  if (e.exec != nullptr) {
    KVS_CUDA_CHECK(cudaGraphExecDestroy(e.exec));
    e.exec = nullptr;
  }
  // The first step of a shape runs eagerly and sizes every buffer; the
  // second is recorded (nothing is allocated while recording).
  if (e.seen++ > 0) {
    KVS_CUDA_CHECK(
        cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    capture_key_ = key;
  }
  const size_t bytes = reinterpret_cast<const uint8_t*>(step_.d_tables) -
                       static_cast<const uint8_t*>(fixed_dev_) +
                       static_cast<size_t>(p.n_tokens) * sizeof(void*);
  KVS_CUDA_CHECK(cudaMemcpyAsync(fixed_dev_, fixed_host_, bytes,
                                 cudaMemcpyHostToDevice, stream_));
  return false;
}

bool CudaBackend::StageFixed(const StepInputs& in, int32_t max_blocks) {
  const TokenPlacement& p = in.placement;
  const int32_t n = p.n_tokens;
  const int32_t r = in.n_logit_rows;
  const size_t table_off = static_cast<size_t>(2 * n + r);
  const size_t ints = table_off + static_cast<size_t>(n) * max_blocks;
  const size_t ptr_off = Align(ints * sizeof(int32_t), 16);
  const size_t bytes = ptr_off + static_cast<size_t>(n) * sizeof(void*);
  if (bytes > kFixedStagingBytes) return false;
  if (fixed_host_ == nullptr) {
    KVS_CUDA_CHECK(
        cudaHostAlloc(&fixed_host_, kFixedStagingBytes, cudaHostAllocPortable));
    KVS_CUDA_CHECK(cudaMalloc(&fixed_dev_, kFixedStagingBytes));
  }
  // The previous step has finished (steps end with a synchronisation), so
  // no upload still reads the staging area.
  auto* h = static_cast<int32_t*>(fixed_host_);
  std::memcpy(h, in.tokens, n * sizeof(int32_t));
  std::memcpy(h + n, p.positions, n * sizeof(int32_t));
  if (r > 0) std::memcpy(h + 2 * n, in.logit_rows, r * sizeof(int32_t));
  auto* dev = static_cast<uint8_t*>(fixed_dev_);
  auto* ptrs = reinterpret_cast<const int32_t**>(
      static_cast<uint8_t*>(fixed_host_) + ptr_off);
  for (int32_t t = 0; t < n; ++t) {
    // Only the entries the token reads: positions 0..p.
    const int32_t len = p.positions[t] / in.block_size + 1;
    const size_t off = table_off + static_cast<size_t>(t) * max_blocks;
    std::memcpy(h + off, p.block_tables[t], len * sizeof(int32_t));
    ptrs[t] = reinterpret_cast<const int32_t*>(dev) + off;
  }
  const auto* d = reinterpret_cast<const int32_t*>(dev);
  step_.d_tokens = d;
  step_.d_positions = d + n;
  step_.d_logit_rows = d + 2 * n;
  step_.d_tables = reinterpret_cast<const int32_t* const*>(dev + ptr_off);
  return true;
}

void CudaBackend::StageEager(const StepInputs& in, int32_t max_pos) {
  const TokenPlacement& p = in.placement;
  const int32_t n = p.n_tokens;
  const int32_t r = in.n_logit_rows;
  // Each distinct table is uploaded once, as far as its tokens read it.
  std::vector<std::pair<const int32_t*, int32_t>> tables;  // host, length
  std::vector<int32_t> table_of(n);
  for (int32_t t = 0; t < n; ++t) {
    const int32_t len = p.positions[t] / in.block_size + 1;
    int32_t idx = -1;
    for (int32_t k = static_cast<int32_t>(tables.size()) - 1; k >= 0; --k) {
      if (tables[k].first == p.block_tables[t]) {
        idx = k;
        break;
      }
    }
    if (idx < 0) {
      idx = static_cast<int32_t>(tables.size());
      tables.emplace_back(p.block_tables[t], 0);
    }
    tables[idx].second = std::max(tables[idx].second, len);
    table_of[t] = idx;
  }
  std::vector<size_t> table_off(tables.size());
  size_t ints = static_cast<size_t>(2 * n + r);
  for (size_t k = 0; k < tables.size(); ++k) {
    table_off[k] = ints;
    ints += tables[k].second;
  }
  const size_t ptr_off = Align(ints * sizeof(int32_t), 16);
  const size_t bytes = ptr_off + static_cast<size_t>(n) * sizeof(void*);

  // The previous upload must have read the staging area before it changes.
  KVS_CUDA_CHECK(cudaEventSynchronize(staged_));
  if (staging_host_cap_ < bytes) {
    if (staging_host_ != nullptr) KVS_CUDA_CHECK(cudaFreeHost(staging_host_));
    staging_host_cap_ = Align(bytes + bytes / 4, 4096);
    KVS_CUDA_CHECK(cudaHostAlloc(&staging_host_, staging_host_cap_,
                                 cudaHostAllocPortable));
  }
  auto* dev = static_cast<uint8_t*>(Grow(&staging_dev_, &staging_dev_cap_, bytes));
  auto* h = static_cast<int32_t*>(staging_host_);
  if (n > 0) {
    std::memcpy(h, in.tokens, n * sizeof(int32_t));
    std::memcpy(h + n, p.positions, n * sizeof(int32_t));
  }
  if (r > 0) std::memcpy(h + 2 * n, in.logit_rows, r * sizeof(int32_t));
  for (size_t k = 0; k < tables.size(); ++k) {
    std::memcpy(h + table_off[k], tables[k].first,
                tables[k].second * sizeof(int32_t));
  }
  auto* ptrs = reinterpret_cast<const int32_t**>(
      static_cast<uint8_t*>(staging_host_) + ptr_off);
  for (int32_t t = 0; t < n; ++t) {
    ptrs[t] = reinterpret_cast<const int32_t*>(dev) + table_off[table_of[t]];
  }
  KVS_CUDA_CHECK(cudaMemcpyAsync(dev, staging_host_, bytes,
                                 cudaMemcpyHostToDevice, stream_));
  KVS_CUDA_CHECK(cudaEventRecord(staged_, stream_));

  step_.max_position = max_pos;
  const auto* d = reinterpret_cast<const int32_t*>(dev);
  step_.d_tokens = d;
  step_.d_positions = d + n;
  step_.d_logit_rows = d + 2 * n;
  step_.d_tables = reinterpret_cast<const int32_t* const*>(dev + ptr_off);
}

void CudaBackend::FillRandom(GgmlType type, void* dst, int64_t n,
                             uint64_t seed, float scale) {
  LaunchFillRandom(type, dst, n, seed, scale, stream_);
}

void CudaBackend::SampleTokens(const float* logits, int32_t n_rows,
                               int32_t vocab, const SampleRow* rows,
                               int32_t* out) {
  if (n_rows <= 0) return;
  const size_t rows_bytes = Align(n_rows * sizeof(SampleRow), 256);
  const size_t out_bytes = Align(n_rows * sizeof(int32_t), 256);
  const size_t ws = SampleWorkspaceBytes(n_rows, vocab);
  auto* base = static_cast<uint8_t*>(
      Grow(&sample_ws_, &sample_ws_cap_, rows_bytes + out_bytes + ws));
  auto* d_rows = reinterpret_cast<SampleRow*>(base);
  auto* d_out = reinterpret_cast<int32_t*>(base + rows_bytes);
  KVS_CUDA_CHECK(cudaMemcpyAsync(d_rows, rows, n_rows * sizeof(SampleRow),
                                 cudaMemcpyHostToDevice, stream_));
  LaunchSampleTokens(logits, n_rows, vocab, d_rows,
                     ws > 0 ? base + rows_bytes + out_bytes : nullptr, d_out,
                     stream_);
  KVS_CUDA_CHECK(cudaMemcpyAsync(out, d_out, n_rows * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, stream_));
  KVS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::set_attention_partition(int32_t partition) {
  KVS_CHECK(IsAttentionPartition(partition)) << "partition " << partition;
  options_.attention_partition = partition;
}

absl::Status CudaBackend::CheckBlockSize(int32_t block_size) const {
  if (block_size <= 0 || options_.attention_partition % block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda: the KV block size (", block_size,
        " tokens) must divide the attention partition of ",
        options_.attention_partition, " positions"));
  }
  return absl::OkStatus();
}

}  // namespace kvsession::kernels::cuda
