// Encodes one step of the model (spec §2) as kernels on the backend's stream: embedding,
// per layer time mix and channel mix, head. Few rows (decode): fused multi-matrix matvec
// launches with their nonlinearities folded in; more rows: cuBLAS on f16 weights with
// elementwise epilogues. With a debug hook every named intermediate is copied out.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "backend/cuda/backend_impl.h"
#include "common/error.h"

namespace rwkv::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(ErrorCode::backend, std::string("cuda: ") + what + ": " + cudaGetErrorString(err));
}

bool quantised(const Mat& W) { return type_info(W.packed.layout.type).block_size > 1; }

// QuantX buffer q for its quantised readers among `readers`: in split order (ops.h) when
// every one of them reads that order (the k-quants: 2.9B Q4_K_M decode +15%, NOTES.md run 146).
QuantX quant_x_for(QuantX q, std::initializer_list<const Mat*> readers) {
  q.split = std::all_of(readers.begin(), readers.end(),
                        [](const Mat* W) { return !quantised(*W) || quant_x_split_reader(W->packed.layout.type); });
  return q;
}

// One-row decode with 16-bit float weights: the LayerNorms and the sparse FFN sum let the
// next kernel launch at their start, so that the product after them requests its weights
// while they wait (H100, 2.9B F16 +3%, BF16 +2.3%). With quantised weights the early blocks
// cost about what they gain (2.9B Q8_0 +0.6%, 0.1B Q8_0 -1.4%: NOTES.md runs 88, 89).
bool early_trigger(const Mat& W, int rows) {
  const TensorType t = W.packed.layout.type;
  return rows == 1 && (t == TensorType::F16 || t == TensorType::BF16);
}

// Whether the one-row products of W (and the float LoRA rows beside it) read their x as f16
// (MatvecJob::x16): 16-bit weights whose rows fill a thread's rounds, one row. The producers of
// those x then write f16 copies.
bool half_x(const Mat& W, int rows) {
  const TensorType t = W.packed.layout.type;
  return rows == 1 && (t == TensorType::F16 || t == TensorType::BF16) && matvec_reads_f16(W.view());
}

// j with f16 x (x16, may be null) and f16 outputs (y16, may be null).
MatvecJob with_f16(MatvecJob j, const void* x16, void* y16 = nullptr) {
  j.x16 = static_cast<const uint16_t*>(x16);
  j.y16 = static_cast<uint16_t*>(y16);
  return j;
}

MatvecJob job(const Mat& W, const float* x, int64_t x_stride, float* y, int64_t y_stride, OutOp out = OutOp::store,
              const float* bias = nullptr, InOp in = InOp::none, const QuantX* xq = nullptr) {
  MatvecJob j;
  j.W = W.view();
  j.x = x;
  j.x_stride = x_stride;
  j.y = y;
  j.y_stride = y_stride;
  j.bias = bias;
  j.in_op = in;
  j.out_op = out;
  if (xq && xq->q0 && quantised(W)) j.xq = *xq;
  return j;
}

}  // namespace

void CudaBackend::emit(int layer, const char* name, const float* data, int rows, int width) {
  if (!hook_) return;
  check(cudaStreamSynchronize(stream_), name);
  std::vector<float> host(size_t(rows) * width);
  check(cudaMemcpy(host.data(), data, host.size() * sizeof(float), cudaMemcpyDeviceToHost), name);
  hook_(layer, name, rows, width, host.data());
}

void CudaBackend::matmul(const Mat& W, const float* x, int64_t x_stride, int R, InOp in, float* y, int64_t y_stride,
                         OutOp out, const float* bias, float* y_raw, const QuantX* xq, const void* x16) {
  if (R <= kMatvecMaxRows) {
    MatvecJob j = job(W, x, x_stride, y, y_stride, out, bias, in, xq);
    j.y_raw = y_raw;
    if (R == 1) j.x16 = static_cast<const uint16_t*>(x16);
    matvec(&j, 1, R, stream_);
    return;
  }
  if (!x16) {
    to_f16(x, x_stride, R, W.cols(), in, scratch_.x16, stream_);
    x16 = scratch_.x16;
  }
  const void* w16 = W.f16;
  int64_t ld = W.ld16;
  if (!w16) {
    dequant_to_f16(W.view(), w16_scratch_.data(), W.cols(), stream_);
    w16 = w16_scratch_.data();
    ld = W.cols();
  }
  if (out == OutOp::add && !y_raw) {
    blas_->gemm_f16(w16, ld, W.rows(), W.cols(), x16, R, y, y_stride, 1.f, stream_);
  } else if (out == OutOp::add) {
    blas_->gemm_f16(w16, ld, W.rows(), W.cols(), x16, R, y_raw, y_stride, 0.f, stream_);
    epilogue(OutOp::add, y_raw, y, nullptr, R, W.rows(), y_stride, stream_);
  } else {
    blas_->gemm_f16(w16, ld, W.rows(), W.cols(), x16, R, y, y_stride, 0.f, stream_);
    if (out != OutOp::store) epilogue(out, y, y, bias, R, W.rows(), y_stride, stream_);
  }
}

// The GEMM path's LoRA products of layer L in four launches (ops.h: LoraArgs): the
// down-projections of (w, a, g, v) as one batched GEMM, tanh/sigmoid and f16, the
// up-projections as one batched GEMM, and the decay/sigmoid epilogues.
void CudaBackend::lora_products(const LayerDev& L, int R, bool with_v) {
  Scratch& s = scratch_;
  const int C = hp_.n_embd, D = d_max_;
  LoraArgs a;
  a.R = R;
  a.D = D;
  a.C = C;
  a.n = with_v ? 4 : 3;
  const int ranks[4] = {hp_.rank_w, hp_.rank_a, hp_.rank_g, hp_.rank_v};
  const InOp mid_ops[4] = {InOp::tanh, InOp::none, InOp::sigmoid, InOp::none};
  const OutOp out_ops[4] = {OutOp::decay, OutOp::sigmoid, OutOp::store, OutOp::sigmoid};
  const float* biases[4] = {L.w0, L.a0, nullptr, L.v0};
  for (int p = 0; p < 4; ++p) {
    a.rank[p] = ranks[p];
    a.mid_op[p] = mid_ops[p];
    a.out_op[p] = out_ops[p];
    a.bias[p] = biases[p];
  }
  // w_lo .. v_lo, the lora_mid16 parts and decay, a, g, nu are each equally spaced.
  a.lo = s.w_lo;
  a.lo_step = s.a_lo - s.w_lo;
  a.mid = s.lora_mid16;
  a.mid_step = int64_t(s.rows) * D;
  a.out = s.decay;
  a.out_step = s.a - s.decay;
  blas_->gemm_f16_strided(L.lora_down16, C, int64_t(D) * C, D, C, s.mix16[1], s.mix16_step, R, s.w_lo, D, a.lo_step,
                          a.n, stream_);
  lora_mid(a, stream_);
  blas_->gemm_f16_strided(L.lora_up16, D, int64_t(C) * D, C, D, s.lora_mid16, a.mid_step, R, s.decay, C, a.out_step,
                          a.n, stream_);
  lora_epilogue(a, stream_);
}

void CudaBackend::encode(const ChunkPlan& p) {
  Scratch& s = scratch_;
  const int C = hp_.n_embd, R = p.R;
  const size_t cap = size_t(s.rows);
  BatchDev bd;
  bd.row_seq = s.ints + cap;
  bd.seq_start = s.ints + 2 * cap;
  bd.seq_slot = s.ints + 3 * cap + 1;
  bd.R = R;
  bd.B = p.B;
  embed_ln(tok_embd_.view(), s.ints, R, ln0_w_, ln0_b_, hp_.ln_eps, hook_ ? s.raw : nullptr, s.h, stream_);
  emit(-1, "embed", s.raw, R, C);
  emit(-1, "embed.ln", s.h, R, C);
  bool att_ln_done = false;
  for (int l = 0; l < hp_.n_layer; ++l) {
    time_mix(l, p, bd, att_ln_done);
    att_ln_done = channel_mix(l, p, bd);
    emit(l, "layer.out", s.h, R, C);
  }
  if (p.n_out > 0) {
    const bool q = p.n_out <= kMatvecMaxRows && quantised(head_);
    const QuantX xq = quant_x_for(s.qx[1], {&head_});
    layer_norm_rows(s.h, s.ints + 4 * cap + 1, p.n_out, C, ln_out_w_, ln_out_b_, hp_.ln_eps, s.head_x,
                    q ? &xq : nullptr, stream_);
    emit(-1, "head.ln", s.head_x, p.n_out, C);
    matmul(head_, s.head_x, C, p.n_out, InOp::none, head_out_ ? head_out_ : s.logits, hp_.n_vocab, OutOp::store,
           nullptr, nullptr, q ? &xq : nullptr);
    emit(-1, "logits", s.logits, p.n_out, hp_.n_vocab);
  }
}

ShiftLerpArgs CudaBackend::att_lerp_args(int l, int R, const BatchDev& bd) {
  Scratch& s = scratch_;
  const LayerDev& L = layers_[l];
  ShiftLerpArgs lerp;
  lerp.batch = bd;
  lerp.h = s.h;
  lerp.C = hp_.n_embd;
  lerp.ln_w = L.att_ln_w;
  lerp.ln_b = L.att_ln_b;
  lerp.eps = hp_.ln_eps;
  lerp.mix = L.att_mix;
  lerp.n_mix = 6;
  lerp.shift = states_.as<float>() + size_t(l) * hp_.state_floats_per_layer();
  lerp.state_stride = hp_.state_floats();
  // The GEMM path reads the lerps in f16 only: fp32 copies (and the LayerNorm output) are
  // written for the matvec path and the debug hook (36 MB less traffic per 512-row layer).
  const bool mv = R <= kMatvecMaxRows;  // matvec path: quantised weights take QuantX inputs
  lerp.xln = hook_ ? s.xln : nullptr;
  for (int m = 0; m < 6; ++m) {
    lerp.out[m] = mv || hook_ ? s.mix[m] : nullptr;
    if (!mv || half_x(L.wr, R)) lerp.out16[m] = s.mix16[m];
  }
  if (mv && quantised(L.wr)) lerp.out_q[0] = quant_x_for(s.qx[0], {&L.wr});
  if (mv && quantised(L.wk)) lerp.out_q[2] = quant_x_for(s.qx[1], {&L.wk});
  if (mv && (quantised(L.wv) || (l > 0 && quantised(L.v1))))
    lerp.out_q[3] = l > 0 ? quant_x_for(s.qx[2], {&L.wv, &L.v1}) : quant_x_for(s.qx[2], {&L.wv});
  lerp.early_trigger = early_trigger(L.wr, R);
  return lerp;
}

void CudaBackend::time_mix(int l, const ChunkPlan& p, const BatchDev& bd, bool att_ln_done) {
  Scratch& s = scratch_;
  const LayerDev& L = layers_[l];
  const int C = hp_.n_embd, R = p.R, D = d_max_;
  float* state = states_.as<float>() + size_t(l) * hp_.state_floats_per_layer();

  const ShiftLerpArgs lerp = att_lerp_args(l, R, bd);
  const bool mv = R <= kMatvecMaxRows;
  if (!att_ln_done) ln_shift_lerp(lerp, stream_);
  emit(l, "att.ln", s.xln, R, C);
  const char* mix_names[6] = {"att.xr", "att.xw", "att.xk", "att.xv", "att.xa", "att.xg"};
  for (int m = 0; m < 6; ++m) emit(l, mix_names[m], s.mix[m], R, C);
  float *xr = s.mix[0], *xw = s.mix[1], *xk = s.mix[2], *xv = s.mix[3], *xa = s.mix[4], *xg = s.mix[5];

  const bool residual = l > 0;
  if (R <= kMatvecMaxRows) {
    // Projections and the first LoRA stages in one launch, the second stages in another
    // (with the decay/sigmoid epilogues folded in). The tanh and sigmoid between the decay
    // and gate LoRA matrices are the first launch's epilogues, so that the second reads its
    // inputs as they are, with no staging through shared memory after its wait (NOTES.md run
    // 119). The first LoRA stages come first in the grid: their float rows are its slowest
    // blocks (F32 rows take two memory rounds), and started last they were the launch's tail
    // (ncu: 21.8 us for ~27 MB at 2.9B Q8_0). H100 decode: 2.9B Q8_0 +1.8%, F16 +2.5% (run 109).
    const OutOp st = OutOp::store;
    const InOp no = InOp::none;
    // f16 x for one-row 16-bit products: the lerps' copies (att_lerp_args) and, for the second
    // stages, the first stages' (lora_mid16, [4][D] halves: w, a, g, v; 16-byte aligned rows
    // where D is a multiple of 8, as in every released model).
    void* const* in16 = lerp.out16;
    uint16_t* lo16[4] = {};
    if (half_x(L.wr, R) && D % 8 == 0)
      for (int i = 0; i < 4; ++i) lo16[i] = static_cast<uint16_t*>(s.lora_mid16) + size_t(i) * D;
    std::vector<MatvecJob> first{with_f16(job(L.w1, xw, C, s.w_lo, D, OutOp::tanh), in16[1], lo16[0]),
                                 with_f16(job(L.a1, xa, C, s.a_lo, D), in16[4], lo16[1]),
                                 with_f16(job(L.g1, xg, C, s.g_lo, D, OutOp::sigmoid), in16[5], lo16[2])};
    if (residual)
      first.push_back(with_f16(job(L.v1, xv, C, s.v_lo, D, st, nullptr, no, &lerp.out_q[3]), in16[3], lo16[3]));
    first.push_back(with_f16(job(L.wr, xr, C, s.r, C, st, nullptr, no, &lerp.out_q[0]), in16[0]));
    first.push_back(with_f16(job(L.wk, xk, C, s.k, C, st, nullptr, no, &lerp.out_q[2]), in16[2]));
    first.push_back(with_f16(job(L.wv, xv, C, s.v, C, st, nullptr, no, &lerp.out_q[3]), in16[3]));
    matvec(first.data(), int(first.size()), R, stream_);
    std::vector<MatvecJob> second{with_f16(job(L.w2, s.w_lo, D, s.decay, C, OutOp::decay, L.w0), lo16[0]),
                                  with_f16(job(L.a2, s.a_lo, D, s.a, C, OutOp::sigmoid, L.a0), lo16[1]),
                                  with_f16(job(L.g2, s.g_lo, D, s.g, C), lo16[2])};
    if (residual) second.push_back(with_f16(job(L.v2, s.v_lo, D, s.nu, C, OutOp::sigmoid, L.v0), lo16[3]));
    matvec(second.data(), int(second.size()), R, stream_);
  } else {
    // The lerped inputs come in f16 from ln_shift_lerp (s.mix16). The f16 copies of the
    // v, r, k matrices lie equally spaced where they are shadows (prepare_gemm): one
    // batched GEMM for the three.
    const auto* v16 = static_cast<const uint16_t*>(L.wv.f16);  // f16 bits
    const int64_t step = int64_t(C) * C;
    if (v16 && L.wr.f16 == v16 + step && L.wk.f16 == v16 + 2 * step && L.wv.ld16 == C && L.wr.ld16 == C &&
        L.wk.ld16 == C) {
      blas_->gemm_f16_strided(v16, C, step, C, C, s.mix16[3], s.mix16_step, R, s.v, C, s.r - s.v, 3, stream_);
    } else {
      matmul(L.wr, xr, C, R, InOp::none, s.r, C, OutOp::store, nullptr, nullptr, nullptr, s.mix16[0]);
      matmul(L.wk, xk, C, R, InOp::none, s.k, C, OutOp::store, nullptr, nullptr, nullptr, s.mix16[2]);
      matmul(L.wv, xv, C, R, InOp::none, s.v, C, OutOp::store, nullptr, nullptr, nullptr, s.mix16[3]);
    }
  }
  if (!mv && L.lora_down16) {
    lora_products(L, R, residual);
  } else if (!mv) {  // one product at a time where the LoRA stacks did not fit
    matmul(L.w1, xw, C, R, InOp::none, s.w_lo, D, OutOp::store, nullptr, nullptr, nullptr, s.mix16[1]);
    matmul(L.w2, s.w_lo, D, R, InOp::tanh, s.decay, C, OutOp::decay, L.w0, nullptr);
    matmul(L.a1, xa, C, R, InOp::none, s.a_lo, D, OutOp::store, nullptr, nullptr, nullptr, s.mix16[4]);
    matmul(L.a2, s.a_lo, D, R, InOp::none, s.a, C, OutOp::sigmoid, L.a0, nullptr);
    matmul(L.g1, xg, C, R, InOp::none, s.g_lo, D, OutOp::store, nullptr, nullptr, nullptr, s.mix16[5]);
    matmul(L.g2, s.g_lo, D, R, InOp::sigmoid, s.g, C, OutOp::store, nullptr, nullptr);
    if (residual) {
      matmul(L.v1, xv, C, R, InOp::none, s.v_lo, D, OutOp::store, nullptr, nullptr, nullptr, s.mix16[3]);
      matmul(L.v2, s.v_lo, D, R, InOp::none, s.nu, C, OutOp::sigmoid, L.v0, nullptr);
    }
  }
  emit(l, "att.r", s.r, R, C);
  emit(l, "att.decay", s.decay, R, C);
  emit(l, "att.k", s.k, R, C);

  WkvArgs w;
  w.batch = bd;
  w.H = hp_.n_head;
  w.N = hp_.head_size;
  w.first_layer = l == 0;
  w.r = s.r;
  w.decay = s.decay;
  w.k = s.k;
  w.a = s.a;
  w.g = s.g;
  w.nu = s.nu;
  w.v = s.v;
  w.v_first = s.v_first;
  w.k_k = L.k_k;
  w.k_a = L.k_a;
  w.r_k = L.r_k;
  w.lnx_w = L.lnx_w;
  w.lnx_b = L.lnx_b;
  w.gn_eps = hp_.gn_eps;
  w.state = state + 2 * size_t(C);
  w.state_stride = hp_.state_floats();
  w.xo = s.xo;
  const bool debug = bool(hook_);
  w.kk = s.kk;
  w.kmod = s.kmod;
  w.y = s.y;
  w.lnx = debug ? s.lnx : nullptr;
  const bool fused = p.max_tokens <= 2;
  if (fused) {
    if (!debug) w.kk = w.kmod = w.y = nullptr;
    if (mv && quantised(L.wo)) w.xo_q = quant_x_for(s.qx[3], {&L.wo});
    if (half_x(L.wo, R)) w.xo16 = static_cast<uint16_t*>(s.x16);  // W_o's f16 x (the GEMM input's scratch)
    wkv_fused(w, stream_);
  } else {
    wkv_prefill(w, stream_);
  }
  emit(l, "att.v", s.v, R, C);
  emit(l, "att.a", s.a, R, C);
  emit(l, "att.g", s.g, R, C);
  emit(l, "att.kk", s.kk, R, C);
  emit(l, "att.k_mod", s.kmod, R, C);
  emit(l, "att.wkv", s.y, R, C);
  emit(l, "att.lnx", s.lnx, R, C);

  matmul(L.wo, s.xo, C, R, InOp::none, s.h, C, OutOp::add, nullptr, debug ? s.raw : nullptr, &w.xo_q, w.xo16);
  emit(l, "att.out", s.raw, R, C);
}

bool CudaBackend::channel_mix(int l, const ChunkPlan& p, const BatchDev& bd) {
  Scratch& s = scratch_;
  const LayerDev& L = layers_[l];
  const int C = hp_.n_embd, F = hp_.n_ffn, R = p.R;
  float* state = states_.as<float>() + size_t(l) * hp_.state_floats_per_layer();

  ShiftLerpArgs lerp;
  lerp.batch = bd;
  lerp.h = s.h;
  lerp.C = C;
  lerp.ln_w = L.ffn_ln_w;
  lerp.ln_b = L.ffn_ln_b;
  lerp.eps = hp_.ln_eps;
  lerp.mix = L.ffn_mix;
  lerp.n_mix = 1;
  lerp.shift = state + C;
  lerp.state_stride = hp_.state_floats();
  const bool mv = R <= kMatvecMaxRows;  // matvec path: quantised weights take QuantX inputs
  lerp.xln = hook_ ? s.xln : nullptr;
  lerp.out[0] = mv || hook_ ? s.mix[0] : nullptr;
  if (!mv || half_x(L.ffn_key, R)) lerp.out16[0] = s.mix16[0];
  if (mv && quantised(L.ffn_key)) lerp.out_q[0] = quant_x_for(s.qx[0], {&L.ffn_key});
  lerp.early_trigger = early_trigger(L.ffn_key, R);
  ln_shift_lerp(lerp, stream_);
  emit(l, "ffn.ln", s.xln, R, C);
  emit(l, "ffn.xk", s.mix[0], R, C);

  // The GEMM path squares the ReLU in the value product's f16 conversion (one epilogue pass
  // over R x F fewer); the debug hook wants the hidden vector itself.
  const bool relu_late = !mv && !hook_;
  matmul(L.ffn_key, s.mix[0], C, R, InOp::none, s.hidden, F, relu_late ? OutOp::store : OutOp::relu_sq, nullptr,
         nullptr, &lerp.out_q[0], lerp.out16[0]);
  emit(l, "ffn.hidden", s.hidden, R, F);
  if (R == 1 && L.ffn_value_t.w && !hook_) {  // one row: skip the hidden units that ReLU^2 zeroed
    // The partials' sum also does the next layer's attention LayerNorm where it can.
    const bool fuse_ln = l + 1 < hp_.n_layer && sum_ln_fusion_ && sparse_sum_ln_supported(C);
    const ShiftLerpArgs next = fuse_ln ? att_lerp_args(l + 1, R, bd) : ShiftLerpArgs{};
    ffn_value_sparse(L.ffn_value_t, s.hidden, s.h, sparse_scratch_, stream_, early_trigger(L.ffn_value, R),
                     fuse_ln ? &next : nullptr);
    return fuse_ln;
  }
  const bool q = mv && quantised(L.ffn_value);
  const QuantX xq = quant_x_for(s.qx_hidden, {&L.ffn_value});
  if (q) quantize_rows(s.hidden, F, R, F, InOp::none, xq, stream_);
  matmul(L.ffn_value, s.hidden, F, R, relu_late ? InOp::relu_sq : InOp::none, s.h, C, OutOp::add, nullptr,
         hook_ ? s.raw : nullptr, q ? &xq : nullptr);
  emit(l, "ffn.out", s.raw, R, C);
  return false;
}

}  // namespace rwkv::cuda
