// The CUDA backend (Backend interface): weight upload, state slots, batching of a step
// into chunks, decode graphs. Kernel encoding of a step is in forward.cpp.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>

#include "backend/cuda/backend_impl.h"
#include "backend/registry.h"
#include "common/error.h"
#include "tensor/quant.h"

namespace rwkv {
namespace cuda {
namespace {

constexpr int kMaxChunkRows = 512;  // tokens per encoded step; longer batches are split

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(ErrorCode::backend, std::string("cuda: ") + what + ": " + cudaGetErrorString(err));
}

size_t align256(size_t x) { return (x + 255) / 256 * 256; }

}  // namespace

CudaBackend::CudaBackend(const BackendOptions& options) : verbose_(options.verbose) {
  std::string reason;
  const int n = device_count(&reason);
  if (n == 0) fail(ErrorCode::backend, "cuda: " + reason);
  if (options.device >= n)
    fail(ErrorCode::backend,
         "cuda: device " + std::to_string(options.device) + " requested, " + std::to_string(n) + " present");
  if (options.device >= 0) {
    device_ = options.device;
  } else {  // the device with the most multiprocessors
    int best = -1;
    for (int d = 0; d < n; ++d) {
      int sms = 0;
      check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, d), "cudaDeviceGetAttribute");
      if (sms > best) {
        best = sms;
        device_ = d;
      }
    }
  }
  check(cudaSetDevice(device_), "cudaSetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
  device_name_ = prop.name;
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  blas_ = std::make_unique<Blas>();
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  clear_graphs();
  if (host_ints_) cudaFreeHost(host_ints_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::clear_graphs() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

void CudaBackend::load(std::shared_ptr<const Model> model, const ProgressFn& progress) {
  if (model_) fail(ErrorCode::argument, "cuda: load called twice");
  if (!model) fail(ErrorCode::argument, "cuda: load without a model");
  check(cudaSetDevice(device_), "cudaSetDevice");
  model_ = std::move(model);
  hp_ = model_->hparams();
  const int N = hp_.head_size;
  if (N != 32 && N != 64 && N != 128)
    fail(ErrorCode::unsupported, "cuda: head size " + std::to_string(N) + " (supported: 32, 64, 128)");
  d_max_ = std::max({hp_.rank_w, hp_.rank_a, hp_.rank_v, hp_.rank_g});
  upload_weights(progress);
}

void CudaBackend::upload_weights(const ProgressFn& progress) {
  const Model& m = *model_;
  const size_t total = m.weight_bytes();
  size_t done = 0;
  auto mat = [&](const Weight& w) {
    Mat out;
    try {
      out.packed = upload_matrix(w.type, w.rows(), w.cols(), w.data);
    } catch (const Error& e) {
      fail(e.code(), std::string(e.what()) + " (tensor " + w.name + ")");
    }
    if (w.type == TensorType::F16) {
      out.f16 = out.packed.view().plane[0];
      out.ld16 = int64_t(out.packed.layout.plane_stride[0] / 2);
    }
    max_matrix_elems_ = std::max(max_matrix_elems_, size_t(w.rows()) * size_t(w.cols()));
    done += w.nbytes;
    if (progress) progress(done, total);
    return out;
  };

  // Vectors: converted to fp32 on the host, uploaded as one buffer.
  std::vector<float> host;
  std::vector<std::pair<const float**, size_t>> fixups;  // pointer to set, float offset
  auto vec = [&](const Weight& w, const float** where) {
    const size_t off = host.size();
    host.resize(off + size_t(w.n_elements()));
    dequantize_row(w.type, w.data, host.data() + off, w.n_elements());
    fixups.emplace_back(where, off);
    done += w.nbytes;
  };

  tok_embd_ = mat(m.tok_embd);
  head_ = mat(m.head);
  vec(m.embd_norm_w, &ln0_w_);
  vec(m.embd_norm_b, &ln0_b_);
  vec(m.out_norm_w, &ln_out_w_);
  vec(m.out_norm_b, &ln_out_b_);
  layers_.resize(m.layers.size());
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const LayerWeights& w = m.layers[l];
    LayerDev& d = layers_[l];
    vec(w.att_norm_w, &d.att_ln_w);
    vec(w.att_norm_b, &d.att_ln_b);
    vec(w.ffn_norm_w, &d.ffn_ln_w);
    vec(w.ffn_norm_b, &d.ffn_ln_b);
    vec(w.lerp_fused, &d.att_mix);
    vec(w.ffn_lerp_k, &d.ffn_mix);
    vec(w.w0, &d.w0);
    vec(w.a0, &d.a0);
    vec(w.k_k, &d.k_k);
    vec(w.k_a, &d.k_a);
    vec(w.r_k, &d.r_k);
    vec(w.lnx_w, &d.lnx_w);
    vec(w.lnx_b, &d.lnx_b);
    d.w1 = mat(w.w1);
    d.w2 = mat(w.w2);
    d.a1 = mat(w.a1);
    d.a2 = mat(w.a2);
    if (l > 0) {  // layer 0's v0/v1/v2 are unused copies of a0/a1/a2 (spec §3.3)
      vec(w.v0, &d.v0);
      d.v1 = mat(w.v1);
      d.v2 = mat(w.v2);
    } else {
      d.v0 = nullptr;
    }
    d.g1 = mat(w.g1);
    d.g2 = mat(w.g2);
    d.wr = mat(w.wr);
    d.wk = mat(w.wk);
    d.wv = mat(w.wv);
    d.wo = mat(w.wo);
    d.ffn_key = mat(w.ffn_key);
    d.ffn_value = mat(w.ffn_value);
  }
  upload_sparse_ffn();
  vectors_ = DeviceBuffer(host.size() * sizeof(float));
  vectors_.upload(host.data(), host.size() * sizeof(float));
  for (auto& [where, off] : fixups) *where = vectors_.as<float>() + off;
  if (progress) progress(total, total);
}

// Transposed copies of the FFN value matrices for the ReLU^2-sparse one-row decode
// (ffn_sparse.cu), where the type allows, the copies fit in half the free memory and the
// sparse kernel's grid fills the card (on the H100 with half the units zero, as in random
// weights: 2.9B Q8_0 +2%, F16 +2% on top of the dense product's +27%, but the 0.1B shape's 24
// blocks -18% Q8_0, -8% F16: src/backend/cuda/NOTES.md run 72). They cost the value
// matrices' bytes once more. RWKV_CUDA_SPARSE_FFN=0 turns them off, =all on wherever the
// type allows (on the H100 the 0.1B shape stays faster dense even with a trained model's 12%
// of units non-zero: 3,433 against 3,046-3,176 tok/s, bench/RESULTS.md session 19).
// RWKV_CUDA_SUM_LN=0 keeps the next layer's attention LayerNorm in its own launch instead of
// the sparse sum's (ops.h: ffn_value_sparse's next_ln), for comparisons.
void CudaBackend::upload_sparse_ffn() {
  const char* fuse = std::getenv("RWKV_CUDA_SUM_LN");
  sum_ln_fusion_ = !(fuse && std::string(fuse) == "0");
  const char* env = std::getenv("RWKV_CUDA_SPARSE_FFN");
  const std::string mode = env ? env : "";
  if (mode == "0") return;
  const bool forced = mode == "all";
  const Model& m = *model_;
  const int64_t C = hp_.n_embd, F = hp_.n_ffn;
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_), "cudaDeviceGetAttribute");
  if (!forced && !sparse_ffn_fills(C, F, sms)) return;
  // Per layer: mixes such as Q4_K_M files give some layers a value type without a sparse
  // layout (those keep the dense product).
  size_t bytes = 0;
  for (const LayerWeights& w : m.layers)
    if (sparse_ffn_supported(w.ffn_value.type, C)) bytes += align256(sparse_ffn_bytes(w.ffn_value.type, C, F));
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  if (bytes == 0 || (!forced && bytes > free_b / 2)) return;
  sparse_ffn_ = DeviceBuffer(bytes + sparse_ffn_scratch_floats(C, F) * sizeof(float));
  std::vector<uint8_t> host;
  size_t off = 0;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const Weight& w = m.layers[l].ffn_value;
    if (!sparse_ffn_supported(w.type, C)) continue;
    const size_t n = sparse_ffn_bytes(w.type, C, F);
    host.assign(n, 0);
    sparse_ffn_pack(w.type, C, F, w.data, host.data());
    sparse_ffn_.upload(host.data(), n, off);
    layers_[l].ffn_value_t = sparse_ffn_view(w.type, C, F, sparse_ffn_.as<uint8_t>() + off);
    off += align256(n);
  }
  sparse_scratch_ = reinterpret_cast<float*>(sparse_ffn_.as<uint8_t>() + off);
  check(cudaMemset(sparse_scratch_, 0, sparse_ffn_scratch_floats(C, F) * sizeof(float)), "sparse ffn scratch");
}

// f16 copies of every non-F16 matrix except the embedding and the LoRA matrices, and the
// LoRA stacks (LayerDev::lora_down16), for the cuBLAS path; when they do not fit in half
// the free memory (or RWKV_CUDA_F16_COPIES=0), matrices are dequantised into Scratch::w16
// on use.
void CudaBackend::prepare_gemm() {
  if (gemm_ready_) return;
  std::vector<Mat*> mats{&head_};
  for (LayerDev& d : layers_)
    for (Mat* m : {&d.wv, &d.wr, &d.wk, &d.wo, &d.ffn_key, &d.ffn_value})  // v, r, k: one batched GEMM
      if (m->packed.buffer.data() && !m->f16) mats.push_back(m);
  size_t bytes = 0;
  for (const Mat* m : mats) bytes += align256(size_t(m->rows()) * size_t(m->cols()) * 2);
  const size_t C = size_t(hp_.n_embd), D = size_t(d_max_), lora_bytes = 2 * 4 * D * C * 2;  // per layer
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  const char* copies_env = std::getenv("RWKV_CUDA_F16_COPIES");
  const bool copies = copies_env == nullptr || std::string(copies_env) != "0";
  if (copies && bytes + lora_bytes * layers_.size() <= free_b / 2) {
    // The LoRA stacks for the batched GEMMs: zero padding, then each matrix in its slot.
    lora16_ = DeviceBuffer(lora_bytes * layers_.size());
    check(cudaMemsetAsync(lora16_.data(), 0, lora16_.size(), stream_), "lora16");
    for (size_t l = 0; l < layers_.size(); ++l) {
      LayerDev& d = layers_[l];
      auto* down = lora16_.as<uint8_t>() + l * lora_bytes;
      auto* up = down + lora_bytes / 2;
      const Mat* downs[4] = {&d.w1, &d.a1, &d.g1, &d.v1};
      const Mat* ups[4] = {&d.w2, &d.a2, &d.g2, &d.v2};
      for (size_t p = 0; p < 4; ++p) {
        if (downs[p]->packed.buffer.data()) dequant_to_f16(downs[p]->view(), down + p * D * C * 2, int64_t(C), stream_);
        if (ups[p]->packed.buffer.data()) dequant_to_f16(ups[p]->view(), up + p * C * D * 2, int64_t(D), stream_);
      }
      d.lora_down16 = down;
      d.lora_up16 = up;
    }
    f16_shadow_ = DeviceBuffer(bytes);
    size_t off = 0;
    for (Mat* m : mats) {
      void* dst = static_cast<uint8_t*>(f16_shadow_.data()) + off;
      dequant_to_f16(m->view(), dst, m->cols(), stream_);
      m->f16 = dst;
      m->ld16 = m->cols();
      off += align256(size_t(m->rows()) * size_t(m->cols()) * 2);
    }
    check(cudaStreamSynchronize(stream_), "f16 shadow");
  } else {
    w16_scratch_ = DeviceBuffer(max_matrix_elems_ * 2);
  }
  gemm_ready_ = true;
}

void CudaBackend::set_slots(int n) {
  if (!model_) fail(ErrorCode::argument, "cuda: set_slots before load");
  if (n < 0) fail(ErrorCode::argument, "cuda: negative slot count");
  check(cudaStreamSynchronize(stream_), "set_slots");
  clear_graphs();
  states_ = DeviceBuffer();
  states_ = DeviceBuffer(size_t(n) * hp_.state_floats() * sizeof(float));
  states_.fill(0);
  n_slots_ = n;
}

void CudaBackend::check_slot(int slot, const char* what) const {
  if (slot < 0 || slot >= n_slots_)
    fail(ErrorCode::argument, std::string("cuda ") + what + ": slot " + std::to_string(slot) + " out of range (" +
                                  std::to_string(n_slots_) + " slots)");
}

void CudaBackend::reset_slot(int slot) {
  check_slot(slot, "reset_slot");
  const size_t bytes = hp_.state_floats() * sizeof(float);
  check(cudaMemsetAsync(states_.as<uint8_t>() + bytes * slot, 0, bytes, stream_), "reset_slot");
  check(cudaStreamSynchronize(stream_), "reset_slot");
}

void CudaBackend::get_state(int slot, std::span<float> out) {
  check_slot(slot, "get_state");
  if (out.size() != hp_.state_floats())
    fail(ErrorCode::argument, "cuda get_state: buffer of " + std::to_string(out.size()) + " floats, state has " +
                                  std::to_string(hp_.state_floats()));
  const size_t bytes = hp_.state_floats() * sizeof(float);
  check(cudaMemcpyAsync(out.data(), states_.as<uint8_t>() + bytes * slot, bytes, cudaMemcpyDeviceToHost, stream_),
        "get_state");
  check(cudaStreamSynchronize(stream_), "get_state");
}

void CudaBackend::set_state(int slot, std::span<const float> in) {
  check_slot(slot, "set_state");
  if (in.size() != hp_.state_floats())
    fail(ErrorCode::argument, "cuda set_state: buffer of " + std::to_string(in.size()) + " floats, state has " +
                                  std::to_string(hp_.state_floats()));
  const size_t bytes = hp_.state_floats() * sizeof(float);
  check(cudaMemcpyAsync(states_.as<uint8_t>() + bytes * slot, in.data(), bytes, cudaMemcpyHostToDevice, stream_),
        "set_state");
  check(cudaStreamSynchronize(stream_), "set_state");
}

// Device-to-device copies on the backend's stream between two buffers of up to 1 GiB (20
// times the L2 of an H100), timed with events: the best of ten.
double CudaBackend::measure_bandwidth() {
  check(cudaSetDevice(device_), "cudaSetDevice");
  size_t free_bytes = 0, total_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
  const size_t bytes = std::min<size_t>(size_t(1) << 30, free_bytes / 4) / 256 * 256;
  if (bytes < (size_t(64) << 20)) return 0;  // too little free memory for a fair copy
  DeviceBuffer src, dst;
  try {
    src = DeviceBuffer(bytes);
    dst = DeviceBuffer(bytes);
  } catch (const Error&) {
    return 0;  // the memory free a moment ago is taken: no measurement rather than a failed bench
  }
  src.fill(1);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  cudaEvent_t start = nullptr, stop = nullptr;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  float best_ms = 1e30f;
  for (int rep = 0; rep < 12; ++rep) {  // the first two warm the clocks up
    check(cudaEventRecord(start, stream_), "cudaEventRecord");
    check(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpyAsync");
    check(cudaEventRecord(stop, stream_), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (rep >= 2) best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return 2.0 * double(bytes) / (double(best_ms) * 1e-3) / 1e9;
}

size_t CudaBackend::memory_bytes() const {
  size_t bytes = vectors_.size() + states_.size() + scratch_.buffer.size() + f16_shadow_.size() + lora16_.size() +
                 w16_scratch_.size() + sparse_ffn_.size();
  bytes += tok_embd_.packed.buffer.size() + head_.packed.buffer.size();
  for (const LayerDev& d : layers_)
    for (const Mat* m :
         {&d.w1, &d.w2, &d.a1, &d.a2, &d.v1, &d.v2, &d.g1, &d.g2, &d.wr, &d.wk, &d.wv, &d.wo, &d.ffn_key, &d.ffn_value})
      bytes += m->packed.buffer.size();
  return bytes + Blas::kWorkspaceBytes;
}

// Activation buffers for `rows` tokens; grows (power of two up to kMaxChunkRows) and
// drops the recorded graphs, whose kernels point into the old buffers.
void CudaBackend::ensure_scratch(int rows) {
  if (rows <= scratch_.rows) return;
  int cap = 1;
  while (cap < rows) cap *= 2;
  cap = std::min(cap, kMaxChunkRows);
  check(cudaStreamSynchronize(stream_), "scratch");
  clear_graphs();
  const size_t C = hp_.n_embd, F = hp_.n_ffn, V = hp_.n_vocab, D = size_t(d_max_), R = cap;
  const size_t wide = std::max({C, F, D});
  std::vector<size_t> sizes;  // bytes, in the order of the assignments below
  const size_t rc = align256(R * C * 4);
  for (int i = 0; i < 23; ++i) sizes.push_back(rc);  // h, xln, mix x6, r..v_first x8, kk..raw x6, head_x
  for (int i = 0; i < 4; ++i) sizes.push_back(align256(R * D * 4));  // w_lo, a_lo, g_lo, v_lo
  sizes.push_back(align256(R * F * 4));                              // hidden
  sizes.push_back(align256(R * V * 4));                              // logits
  sizes.push_back(align256(R * wide * 2));                           // x16
  for (int i = 0; i < 6; ++i) sizes.push_back(align256(R * C * 2));  // mix16
  sizes.push_back(align256(4 * R * D * 2));                          // lora_mid16
  for (int i = 0; i < 4; ++i) sizes.push_back(align256(quant_x_bytes(cap, C)));
  sizes.push_back(align256(quant_x_bytes(cap, F)));  // qx_hidden
  sizes.push_back(align256((5 * R + 1) * 4));        // ints
  size_t total = 0;
  for (size_t s : sizes) total += s;
  scratch_ = Scratch{};
  scratch_.buffer = DeviceBuffer(total);
  uint8_t* p = scratch_.buffer.as<uint8_t>();
  size_t i = 0;
  auto next = [&]() {
    uint8_t* q = p;
    p += sizes[i++];
    return q;
  };
  Scratch& s = scratch_;
  float** rc_bufs[] = {&s.h,  &s.xln,  &s.mix[0], &s.mix[1], &s.mix[2], &s.mix[3], &s.mix[4], &s.mix[5],
                       &s.v,  &s.r,    &s.k,      &s.decay,  &s.a,      &s.g,      &s.nu,     &s.v_first,
                       &s.kk, &s.kmod, &s.y,      &s.lnx,    &s.xo,     &s.raw,    &s.head_x};
  for (float** b : rc_bufs) *b = reinterpret_cast<float*>(next());
  for (float** b : {&s.w_lo, &s.a_lo, &s.g_lo, &s.v_lo}) *b = reinterpret_cast<float*>(next());
  s.hidden = reinterpret_cast<float*>(next());
  s.logits = reinterpret_cast<float*>(next());
  s.x16 = next();
  for (int m : {1, 4, 5, 3, 0, 2}) s.mix16[m] = next();  // the LoRA inputs w, a, g, v first
  s.mix16_step = int64_t(align256(R * C * 2) / 2);
  s.lora_mid16 = next();
  for (QuantX& q : s.qx) q = quant_x_view(next(), cap, C);
  s.qx_hidden = quant_x_view(next(), cap, F);
  s.ints = reinterpret_cast<int32_t*>(next());
  s.rows = cap;
  // nu is read for layers >= 1 only; zero everything once so no kernel reads garbage.
  s.buffer.fill(0);

  if (host_ints_) cudaFreeHost(host_ints_);
  host_ints_ = nullptr;
  host_ints_count_ = 5 * R + 1;
  check(cudaHostAlloc(reinterpret_cast<void**>(&host_ints_), host_ints_count_ * 4, cudaHostAllocDefault),
        "cudaHostAlloc");
}

void CudaBackend::step(std::span<const SeqTokens> batch, float* logits) {
  if (!model_) fail(ErrorCode::argument, "cuda: step before load");
  if (batch.empty()) return;
  if (!logits) fail(ErrorCode::argument, "cuda step: no logits buffer");
  check(cudaSetDevice(device_), "cudaSetDevice");
  std::set<int> seen;
  for (const SeqTokens& s : batch) {
    check_slot(s.slot, "step");
    if (!seen.insert(s.slot).second)
      fail(ErrorCode::argument, "cuda step: slot " + std::to_string(s.slot) + " appears twice in one batch");
    if (s.n_tokens < 1 || !s.tokens) fail(ErrorCode::argument, "cuda step: a sequence without tokens");
    for (int t = 0; t < s.n_tokens; ++t)
      if (s.tokens[t] < 0 || s.tokens[t] >= hp_.n_vocab)
        fail(ErrorCode::argument, "cuda step: token id " + std::to_string(s.tokens[t]) + " out of range (vocabulary " +
                                      std::to_string(hp_.n_vocab) + ")");
  }

  // Chunks of at most kMaxChunkRows rows; a long sequence continues in the next chunk
  // (its state carries over), giving logits only where its rows are wanted.
  std::vector<int32_t> tokens, row_seq, seq_start, seq_slot, out_rows;
  ChunkPlan plan;
  float* out = logits;
  auto flush = [&]() {
    if (plan.R == 0) return;
    seq_start.push_back(plan.R);
    ensure_scratch(plan.R);
    const size_t cap = size_t(scratch_.rows);
    std::fill(host_ints_, host_ints_ + host_ints_count_, 0);
    std::copy(tokens.begin(), tokens.end(), host_ints_);
    std::copy(row_seq.begin(), row_seq.end(), host_ints_ + cap);
    std::copy(seq_start.begin(), seq_start.end(), host_ints_ + 2 * cap);
    std::copy(seq_slot.begin(), seq_slot.end(), host_ints_ + 3 * cap + 1);
    std::copy(out_rows.begin(), out_rows.end(), host_ints_ + 4 * cap + 1);
    plan.n_out = int(out_rows.size());
    run_chunk(plan, out);
    out += size_t(plan.n_out) * hp_.n_vocab;
    tokens.clear();
    row_seq.clear();
    seq_start.clear();
    seq_slot.clear();
    out_rows.clear();
    plan = ChunkPlan{};
  };
  for (const SeqTokens& s : batch) {
    int done = 0;
    while (done < s.n_tokens) {
      const int take = std::min(s.n_tokens - done, kMaxChunkRows - plan.R);
      const int first = plan.R;
      seq_start.push_back(first);
      seq_slot.push_back(s.slot);
      for (int t = 0; t < take; ++t) {
        tokens.push_back(s.tokens[done + t]);
        row_seq.push_back(plan.B);
        if (s.all_logits || done + t == s.n_tokens - 1) out_rows.push_back(first + t);
      }
      plan.R += take;
      plan.B += 1;
      plan.max_tokens = std::max(plan.max_tokens, take);
      done += take;
      if (plan.R == kMaxChunkRows) flush();
    }
  }
  flush();
}

bool CudaBackend::HostSpans::holds(const float* p, size_t n) {
  std::lock_guard lock(mutex);
  auto it = spans.upper_bound(p);
  if (it == spans.begin()) return false;
  --it;
  return p + n <= it->first + it->second;
}

// Mapped as well as page-locked: kernels may write it (the head's logits, run_chunk).
HostFloats CudaBackend::alloc_host(size_t n) {
  void* p = nullptr;
  n = std::max<size_t>(n, 1);
  check(cudaHostAlloc(&p, n * sizeof(float), cudaHostAllocPortable | cudaHostAllocMapped),
        "cudaHostAlloc (page-locked logits buffer)");
  auto* f = static_cast<float*>(p);
  {
    std::lock_guard lock(host_spans_->mutex);
    host_spans_->spans[f] = n;
  }
  return HostFloats(f, [spans = host_spans_](float* q) {
    {
      std::lock_guard lock(spans->mutex);
      spans->spans.erase(q);
    }
    cudaFreeHost(q);
  });
}

void CudaBackend::run_chunk(const ChunkPlan& plan, float* logits) {
  if (plan.R > kMatvecMaxRows) prepare_gemm();
  // The batch layout goes up first; a decode graph holds the copy as its first node (it
  // reads host_ints_ when the graph runs), one stream operation fewer per step.
  const bool graph = use_graphs_ && !hook_ && plan.max_tokens == 1;
  auto upload = [&] {
    check(cudaMemcpyAsync(scratch_.ints, host_ints_, host_ints_count_ * 4, cudaMemcpyHostToDevice, stream_),
          "batch upload");
  };
  if (!graph) upload();
  // Few logits rows into a buffer from alloc_host: the head product writes them there
  // itself, overlapping the PCIe transfer with its own run instead of a download after it
  // (0.1B: ~11 us of a ~356 us step, NOTES.md run 53).
  const size_t n_logits = size_t(plan.n_out) * hp_.n_vocab;
  head_out_ = plan.n_out > 0 && plan.n_out <= kMatvecMaxRows && !hook_ && host_spans_->holds(logits, n_logits)
                  ? logits
                  : nullptr;
  if (graph) {
    const std::pair<int, const float*> key{plan.B * (kMaxChunkRows + 1) + plan.n_out, head_out_};
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      cudaGraph_t g = nullptr;
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
      try {
        upload();
        encode(plan);
      } catch (...) {
        cudaStreamEndCapture(stream_, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      check(cudaStreamEndCapture(stream_, &g), "cudaStreamEndCapture");
      cudaGraphExec_t exec = nullptr;
      const cudaError_t err = cudaGraphInstantiate(&exec, g, 0);
      cudaGraphDestroy(g);
      check(err, "cudaGraphInstantiate");
      it = graphs_.emplace(key, exec).first;
    }
    check(cudaGraphLaunch(it->second, stream_), "cudaGraphLaunch");
  } else {
    encode(plan);
  }
  if (plan.n_out > 0 && !head_out_)
    check(cudaMemcpyAsync(logits, scratch_.logits, n_logits * sizeof(float), cudaMemcpyDeviceToHost, stream_),
          "logits download");
  check(cudaStreamSynchronize(stream_), "step");
}

}  // namespace cuda

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options) {
  return std::make_unique<cuda::CudaBackend>(options);
}

}  // namespace rwkv
