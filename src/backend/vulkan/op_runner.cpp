#include "backend/vulkan/op_runner.h"

#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "backend/vulkan/weights.h"
#include "common/error.h"
#include "common/half.h"

namespace rwkv::vk {
namespace {

constexpr uint32_t kGuardBits = 0x7FC0BEEFu;  // a quiet NaN no arithmetic produces
constexpr uint32_t kGuardWords = 64;

float guard_value() {
  float f;
  std::memcpy(&f, &kGuardBits, 4);
  return f;
}

bool is_guard(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u == kGuardBits;
}

// Float16 activations in the float32 scratch: half i is the low (even i) or high half of
// word i / 2, as the shaders' packHalf2x16 stores them.
std::vector<float> pack_halves(std::span<const float> x, float scale) {
  std::vector<float> words((x.size() + 1) / 2);
  for (size_t i = 0; i < x.size(); i += 2) {
    const uint32_t lo = f32_to_f16(x[i] * scale), hi = i + 1 < x.size() ? f32_to_f16(x[i + 1] * scale) : 0;
    words[i / 2] = bits_to_f32(lo | (hi << 16));
  }
  return words;
}

float half_at(std::span<const float> words, size_t i) {
  const uint32_t word = f32_to_bits(words[i / 2]);
  return f16_to_f32(uint16_t(i % 2 == 0 ? word & 0xFFFFu : word >> 16));
}

// The first n halves of `words` as floats.
std::vector<float> unpack_halves(std::span<const float> words, size_t n) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = half_at(words, i);
  return out;
}

}  // namespace

// Host image of the device scratch: regions separated by guard words.
class OpRunner::Scratch {
 public:
  Scratch() { pad(); }
  // A region holding `init`, or `n` guard-pattern floats (an output) when init is empty.
  uint32_t add(std::span<const float> init, size_t n = 0) {
    const uint32_t off = uint32_t(data_.size());
    if (!init.empty()) {
      data_.insert(data_.end(), init.begin(), init.end());
    } else {
      data_.insert(data_.end(), n, guard_value());
    }
    regions_.push_back({off, uint32_t(data_.size() - off)});
    pad();
    return off;
  }
  std::vector<float> get(uint32_t off, size_t n) const {
    return std::vector<float>(data_.begin() + off, data_.begin() + off + n);
  }
  std::vector<float>& data() { return data_; }
  size_t broken_guards() const {
    size_t broken = 0;
    size_t pos = 0;
    for (const auto& [off, n] : regions_) {
      for (size_t i = pos; i < off; ++i) broken += is_guard(data_[i]) ? 0 : 1;
      pos = off + n;
    }
    for (size_t i = pos; i < data_.size(); ++i) broken += is_guard(data_[i]) ? 0 : 1;
    return broken;
  }

 private:
  void pad() {
    // Guards, then alignment to 4 floats so every region may be read as vec4.
    data_.insert(data_.end(), kGuardWords, guard_value());
    while (data_.size() % 4 != 0) data_.push_back(guard_value());
  }
  std::vector<float> data_;
  std::vector<std::pair<uint32_t, uint32_t>> regions_;
};

OpRunner::OpRunner() {
  ctx_ = Context::create(-1, /*allow_cpu_devices=*/true);
  kernels_ = std::make_unique<Kernels>(*ctx_);
}

OpRunner::~OpRunner() = default;

template <class F>
void OpRunner::run(Scratch& scratch, const std::vector<uint32_t>& meta, F&& body) {
  std::vector<float>& data = scratch.data();
  Buffer dev(*ctx_, data.size() * 4, MemoryKind::device, "op scratch");
  upload_bytes(*ctx_, dev.handle(), 0, data.data(), data.size() * 4);
  Buffer meta_buf(*ctx_, std::max<size_t>(meta.size(), 4) * 4, MemoryKind::staging, "op meta");
  std::memcpy(meta_buf.mapped(), meta.data(), meta.size() * 4);
  Buffer host(*ctx_, data.size() * 4, MemoryKind::readback, "op readback");
  ctx_->run([&](VkCommandBuffer cmd) {
    kernels_->from_transfer(cmd);  // the uploads
    body(cmd, dev.handle(), meta_buf.handle());
    kernels_->to_transfer(cmd);
    const VkBufferCopy region{0, 0, data.size() * 4};
    ctx_->fn().vkCmdCopyBuffer(cmd, dev.handle(), host.handle(), 1, &region);
    kernels_->host_barrier(cmd);
  });
  ctx_->invalidate(host);
  std::memcpy(data.data(), host.mapped(), data.size() * 4);
  guards_broken_ = scratch.broken_guards();
}

std::vector<float> OpRunner::matrix(const Weight& W, std::span<const float> x, int T, MatPath path, uint32_t act,
                                    std::span<const float> bias, uint64_t arena_limit, std::span<const uint32_t> gather,
                                    float x_scale, uint32_t splits, MatF16 f16) {
  WeightStore store(*ctx_, arena_limit);
  const DeviceMatrix m = store.add_matrix(W);
  if (m.pieces.size() > 4) fail(ErrorCode::argument, "OpRunner::matrix: more than 4 pieces");
  const uint32_t bias_off = bias.empty() ? kNone : store.add_floats(bias.data(), bias.size());
  store.upload({});
  const uint32_t n_out = gather.empty() ? uint32_t(T) : uint32_t(gather.size());

  Scratch s;
  const std::vector<float> x_words = f16.x ? pack_halves(x, x_scale) : std::vector<float>();
  const uint32_t x_off = s.add(f16.x ? std::span<const float>(x_words) : x);
  // Float16 y rows are whole 32-bit pairs: an even stride (the backend's are), and pieces that
  // start on even rows.
  const uint32_t y_stride = f16.y ? (m.rows + 1) / 2 * 2 : m.rows;
  for (const DeviceMatrix::Piece& p : m.pieces) {
    if (f16.y && p.row_begin % 2 != 0) fail(ErrorCode::argument, "OpRunner::matrix: float16 y with an odd piece start");
  }
  const uint32_t y_off[2] = {s.add({}, size_t(n_out) * y_stride), s.add({}, size_t(n_out) * y_stride)};
  // Jobs [0, pieces) write the first output, [pieces, 2 pieces) the second (a second run).
  std::vector<MatJob> jobs;
  MatBindings b;
  MatJobs mj;
  mj.n_jobs = uint32_t(m.pieces.size());
  mj.max_cols = m.cols;
  mj.splits = splits;
  for (const uint32_t y : y_off) {
    mj.row_tiles = 0;
    for (size_t i = 0; i < m.pieces.size(); ++i) {
      const DeviceMatrix::Piece& p = m.pieces[i];
      MatJob j;
      j.wbind = uint32_t(i);
      j.w_off = p.offset;
      j.row_bytes = m.row_bytes;
      j.rows = p.rows;
      j.cols = m.cols;
      j.x_off = x_off;
      j.x_stride = m.cols;
      j.y_off = y + p.row_begin;
      j.y_base = y;
      j.y_stride = y_stride;
      j.flags = act | (gather.empty() ? 0 : kJobGather);
      j.bias_off = bias_off == kNone ? kNone : bias_off + p.row_begin;
      j.type = uint32_t(m.type);
      j.x_scale = x_scale;
      j.tile_base = mj.row_tiles;
      mj.row_tiles += (p.rows + Kernels::matmul_rows - 1) / Kernels::matmul_rows;
      jobs.push_back(j);
      b.weights[i] = store.arena(p.arena);
      mj.max_rows = std::max(mj.max_rows, p.rows);
    }
  }
  for (size_t i = m.pieces.size(); i < 4; ++i) b.weights[i] = b.weights[0];
  Buffer job_buf(*ctx_, jobs.size() * sizeof(MatJob), MemoryKind::device, "op jobs");
  upload_bytes(*ctx_, job_buf.handle(), 0, jobs.data(), jobs.size() * sizeof(MatJob));
  // Split-K scratch for the plan the dispatch will take (counters, then partial sums),
  // zeroed; a split product runs twice.
  MatmulPlan plan;
  if (path == MatPath::matmul || path == MatPath::matmul_coopmat)
    plan = kernels_->matmul_plan(mj, n_out, ~0ull, ~0ull, path);
  const uint32_t counters = (plan.count_words + 3) / 4 * 4, runs = plan.splits > 1 ? 2 : 1;
  Buffer scratch_k;
  if (plan.splits > 1) {
    scratch_k = Buffer(*ctx_, (counters + plan.part_words) * 4, MemoryKind::device, "op matmul scratch");
    ctx_->run([&](VkCommandBuffer cmd) { ctx_->fn().vkCmdFillBuffer(cmd, scratch_k.handle(), 0, VK_WHOLE_SIZE, 0); });
  }
  const std::vector<uint32_t> meta(gather.begin(), gather.end());
  run(s, meta, [&](VkCommandBuffer cmd, VkBuffer scratch, VkBuffer meta_buf) {
    b.vecs = store.vectors();
    b.x = scratch;
    b.y = scratch;
    b.jobs = job_buf.handle();
    b.meta = meta_buf;
    b.split_k = scratch_k.handle();
    b.count_words = plan.count_words;
    b.part_off = counters;
    b.part_words = plan.part_words;
    for (uint32_t r = 0; r < runs; ++r) {
      mj.job_base = r * mj.n_jobs;
      kernels_->matrix(cmd, m.type, b, mj, n_out, 0, path, f16);
      kernels_->barrier(cmd);
    }
  });
  // Float16 y: n_out rows of y_stride halves at the region's start.
  const auto result = [&](uint32_t off) {
    std::vector<float> y = s.get(off, size_t(n_out) * m.rows);
    if (!f16.y) return y;
    std::vector<float> out(y.size());
    for (size_t t = 0; t < n_out; ++t) {
      for (size_t r = 0; r < m.rows; ++r) out[t * m.rows + r] = half_at(y, t * y_stride + r) / f16.y_scale;
    }
    return out;
  };
  const std::vector<float> y = result(y_off[0]);
  runs_differ_ = runs == 2 && result(y_off[1]) != y;
  return y;
}

std::array<std::vector<float>, 2> OpRunner::ffn_sparse(const Weight& W, std::span<const float> h, uint32_t lanes,
                                                       uint32_t units) {
  WeightStore store(*ctx_);
  const DeviceMatrix m = store.add_transposed(W);
  store.upload({});
  const uint32_t C = m.cols, F = m.rows;
  if (h.size() != F) fail(ErrorCode::argument, "OpRunner::ffn_sparse: h has " + std::to_string(h.size()) + " values");
  const SparseFfnShape shape = sparse_ffn_shape(m.type, C, F, lanes, units);
  Buffer parts(*ctx_, shape.partial_words(C) * 4, MemoryKind::device, "op sparse FFN partial sums");
  ctx_->run([&](VkCommandBuffer cmd) { ctx_->fn().vkCmdFillBuffer(cmd, parts.handle(), 0, VK_WHOLE_SIZE, 0); });
  Scratch s;
  const uint32_t h_off = s.add(h);
  const uint32_t y_off[2] = {s.add({}, C), s.add({}, C)};
  run(s, {}, [&](VkCommandBuffer cmd, VkBuffer scratch, VkBuffer) {
    for (const uint32_t y : y_off) {
      const FfnSparsePush p{
          .w_off = m.pieces[0].offset / 16, .s_off = 0, .C = C, .F = F, .h_off = h_off, .y_off = y, .part_off = 0};
      kernels_->ffn_sparse(cmd, m.type, store.arena(m.pieces[0].arena), scratch, parts.handle(), p, shape);
      kernels_->barrier(cmd);
    }
  });
  return {s.get(y_off[0], C), s.get(y_off[1], C)};
}

void OpRunner::embed(const Weight& table, std::span<const int32_t> tokens, std::span<const float> ln_w,
                     std::span<const float> ln_b, float eps, std::vector<float>& emb, std::vector<float>& h) {
  WeightStore store(*ctx_);
  const DeviceMatrix m = store.add_matrix(table);
  const uint32_t w_off = store.add_floats(ln_w.data(), ln_w.size());
  const uint32_t b_off = store.add_floats(ln_b.data(), ln_b.size());
  store.upload({});
  const uint32_t T = uint32_t(tokens.size()), C = m.cols;
  Scratch s;
  const uint32_t emb_off = s.add({}, size_t(T) * C);
  const uint32_t h_off = s.add({}, size_t(T) * C);
  const std::vector<uint32_t> meta(tokens.begin(), tokens.end());
  run(s, meta, [&](VkCommandBuffer cmd, VkBuffer scratch, VkBuffer meta_buf) {
    for (const DeviceMatrix::Piece& p : m.pieces) {
      const EmbedPush push{.w_off = p.offset,
                           .row_bytes = m.row_bytes,
                           .piece_start = p.row_begin,
                           .piece_rows = p.rows,
                           .C = C,
                           .emb_off = emb_off,
                           .h_off = h_off,
                           .ln_w = w_off,
                           .ln_b = b_off,
                           .eps = eps,
                           .tok_off = 0};
      kernels_->embed(cmd, m.type, store.arena(p.arena), store.vectors(), scratch, meta_buf, push, T);
    }
  });
  emb = s.get(emb_off, size_t(T) * C);
  h = s.get(h_off, size_t(T) * C);
}

// Meta tables in the layout the kernels read: per row slot and flags, per sequence start,
// rows and slot, each table `stride` long.
static std::vector<uint32_t> seq_tables(std::span<const OpSeq> seqs, uint32_t T, uint32_t stride) {
  std::vector<uint32_t> meta(size_t(stride) * 5, 0);
  uint32_t row = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    meta[3 * stride + s] = row;
    meta[4 * stride + s] = uint32_t(seqs[s].rows);
    meta[2 * stride + s] = uint32_t(seqs[s].slot);
    for (int i = 0; i < seqs[s].rows; ++i, ++row) {
      meta[row] = uint32_t(seqs[s].slot);
      meta[stride + row] = (i == 0 ? 1u : 0u) | (i == seqs[s].rows - 1 ? 2u : 0u);
    }
  }
  if (row != T) fail(ErrorCode::argument, "OpRunner: sequence rows do not add up to T");
  return meta;
}

void OpRunner::ln_mix(LnMixIo& io, int C, int nmix, std::span<const OpSeq> seqs, bool mix16) {
  const uint32_t T = uint32_t(io.h_in.size() / size_t(C));
  const uint32_t stride = std::max<uint32_t>(T, uint32_t(seqs.size()));
  // meta: row_slot at 0, row_flags at stride (the seq tables after are unused here).
  const std::vector<uint32_t> meta = seq_tables(seqs, T, stride);
  WeightStore store(*ctx_);
  const uint32_t w_off = store.add_floats(io.ln_w.data(), io.ln_w.size());
  const uint32_t b_off = store.add_floats(io.ln_b.data(), io.ln_b.size());
  const uint32_t mu_off = io.mu.empty() ? 0 : store.add_floats(io.mu.data(), io.mu.size());
  store.upload({});
  Scratch s;
  const uint32_t h_in = s.add(io.h_in);
  const uint32_t delta = io.delta.empty() ? kNone : s.add(io.delta);
  const uint32_t commit = io.commit_src.empty() ? kNone : s.add(io.commit_src);
  const uint32_t state = s.add(io.state);
  const uint32_t h_out = s.add({}, io.h_in.size());
  const uint32_t xln = s.add({}, io.h_in.size());
  const uint32_t mix = s.add({}, io.h_in.size() * size_t(nmix));
  run(s, meta, [&](VkCommandBuffer cmd, VkBuffer scratch, VkBuffer meta_buf) {
    // The scratch buffer doubles as the state buffer: the state region's offset is folded
    // into the shift and commit offsets.
    const LnMixPush p{.C = uint32_t(C),
                      .h_in = h_in,
                      .delta = delta,
                      .h_out = h_out,
                      .xln = xln,
                      .mix = mix,
                      .mix_stride = T * uint32_t(C),
                      .nmix = uint32_t(nmix),
                      .mu = mu_off,
                      .ln_w = w_off,
                      .ln_b = b_off,
                      .eps = io.eps,
                      .slot_stride = io.slot_stride,
                      .shift_off = state + io.shift_off,
                      .commit_src = commit,
                      .commit_off = state + io.commit_off,
                      .row_slot = 0,
                      .row_flags = stride};
    kernels_->ln_mix(cmd, scratch, store.vectors(), scratch, scratch, meta_buf, p, T, mix16);
  });
  io.h_out = s.get(h_out, io.h_in.size());
  io.xln = s.get(xln, io.h_in.size());
  io.mix = s.get(mix, io.h_in.size() * size_t(nmix));
  if (mix16) {  // mix slot m: T x C halves from its start
    const std::vector<float> words = io.mix;
    const size_t n = io.h_in.size();
    for (size_t m = 0; m < size_t(nmix); ++m) {
      for (size_t i = 0; i < n; ++i) io.mix[m * n + i] = half_at(words, 2 * m * n + i);
    }
  }
  io.state = s.get(state, io.state.size());
}

template <class F>
void OpRunner::run_wkv(WkvIo& io, WeightStore& store, Scratch& s, int C, int N, std::span<const OpSeq> seqs,
                       bool layer0, F&& dispatch) {
  const uint32_t T = uint32_t(io.r.size() / size_t(C));
  const uint32_t stride = std::max<uint32_t>(T, uint32_t(seqs.size()));
  const std::vector<uint32_t> meta = seq_tables(seqs, T, stride);
  const uint32_t k_k = store.add_floats(io.k_k.data(), io.k_k.size());
  const uint32_t k_a = store.add_floats(io.k_a.data(), io.k_a.size());
  const uint32_t r_k = store.add_floats(io.r_k.data(), io.r_k.size());
  const uint32_t lnx_w = store.add_floats(io.lnx_w.data(), io.lnx_w.size());
  const uint32_t lnx_b = store.add_floats(io.lnx_b.data(), io.lnx_b.size());
  store.upload({});
  const size_t n = io.r.size();
  const uint32_t r = s.add(io.r), k = s.add(io.k), v = s.add(io.v), xa = s.add(io.xa);
  const uint32_t v_first = layer0 ? s.add({}, n) : s.add(io.v_first);
  const uint32_t out = s.add({}, n);
  // The five debug outputs must be consecutive regions `dbg_stride` apart: one block.
  const uint32_t dbg = s.add({}, 5 * n);
  const uint32_t slot_stride = uint32_t(2 * C + C * N);
  Buffer state(*ctx_, (io.state.size() + kGuardWords) * 4, MemoryKind::device, "op state");
  std::vector<float> state_host = io.state;
  state_host.insert(state_host.end(), kGuardWords, guard_value());
  upload_bytes(*ctx_, state.handle(), 0, state_host.data(), state_host.size() * 4);
  Buffer state_back(*ctx_, state_host.size() * 4, MemoryKind::readback, "op state readback");
  run(s, meta, [&](VkCommandBuffer cmd, VkBuffer scratch, VkBuffer meta_buf) {
    const WkvPush p{.C = uint32_t(C),
                    .r = r,
                    .k = k,
                    .v = v,
                    .a = kNone,
                    .decay = kNone,
                    .g = kNone,
                    .nu = kNone,
                    .v_first = v_first,
                    .xa = xa,
                    .out = out,
                    .dbg = dbg,
                    .dbg_stride = uint32_t(n),
                    .k_k = k_k,
                    .k_a = k_a,
                    .r_k = r_k,
                    .lnx_w = lnx_w,
                    .lnx_b = lnx_b,
                    .gn_eps = io.gn_eps,
                    .slot_stride = slot_stride,
                    .seq_start = 3 * stride,
                    .seq_rows = 4 * stride,
                    .seq_slot = 2 * stride};
    dispatch(cmd, scratch, state.handle(), meta_buf, p);
    kernels_->to_transfer(cmd);
    const VkBufferCopy region{0, 0, state_host.size() * 4};
    ctx_->fn().vkCmdCopyBuffer(cmd, state.handle(), state_back.handle(), 1, &region);
  });
  ctx_->invalidate(state_back);
  std::memcpy(state_host.data(), state_back.mapped(), state_host.size() * 4);
  for (size_t i = io.state.size(); i < state_host.size(); ++i) guards_broken_ += is_guard(state_host[i]) ? 0 : 1;
  io.state.assign(state_host.begin(), state_host.begin() + std::ptrdiff_t(io.state.size()));
  io.out = s.get(out, n);
  io.kk = s.get(dbg, n);
  io.k_mod = s.get(dbg + uint32_t(n), n);
  io.v_mixed = s.get(dbg + 2 * uint32_t(n), n);
  io.wkv = s.get(dbg + 3 * uint32_t(n), n);
  io.lnx = s.get(dbg + 4 * uint32_t(n), n);
  if (layer0) io.v_first = s.get(v_first, n);
}

void OpRunner::wkv(WkvIo& io, int C, int N, std::span<const OpSeq> seqs, bool prefill, WkvScanShape shape, bool out16) {
  if (out16 && !prefill) fail(ErrorCode::argument, "OpRunner::wkv: float16 output is the prefill form's");
  WeightStore store(*ctx_);
  Scratch s;
  const uint32_t a = s.add(io.a), decay = s.add(io.decay), g = s.add(io.g);
  const uint32_t nu = io.nu.empty() ? kNone : s.add(io.nu);
  const uint32_t T = uint32_t(io.r.size() / size_t(C));
  run_wkv(io, store, s, C, N, seqs, io.nu.empty(),
          [&](VkCommandBuffer cmd, VkBuffer scratch, VkBuffer state, VkBuffer meta_buf, WkvPush p) {
            p.a = a;
            p.decay = decay;
            p.g = g;
            p.nu = nu;
            if (prefill) {
              kernels_->wkv_prefill(cmd, scratch, store.vectors(), state, meta_buf, p, uint32_t(C / N),
                                    uint32_t(seqs.size()), T, uint32_t(N), shape, out16);
            } else {
              kernels_->wkv(cmd, scratch, store.vectors(), state, meta_buf, p, uint32_t(C / N), uint32_t(seqs.size()),
                            uint32_t(N));
            }
          });
  if (out16) io.out = unpack_halves(io.out, io.out.size());  // T x C halves from the region's start
}

void OpRunner::wkv_lora(WkvIo& io, const LoraIo& lora, int C, int N, std::span<const OpSeq> seqs,
                        uint32_t invocations) {
  const bool layer0 = lora.v_mid.empty();
  WeightStore store(*ctx_);
  const Weight* up[4] = {lora.w2, lora.a2, lora.g2, lora.v2};
  WkvLoraShape shape{.head_size = uint32_t(N),
                     .invocations = invocations != 0 ? invocations : Kernels::wkv_lora_invocations(uint32_t(N))};
  std::array<DeviceMatrix, 4> m;
  for (size_t i = 0; i < 4; ++i) {
    m[i] = store.add_matrix(*up[i]);
    shape.types[i] = m[i].type;
    shape.ranks[i] = m[i].cols;
  }
  const uint32_t w0 = store.add_floats(lora.w0.data(), lora.w0.size());
  const uint32_t a0 = store.add_floats(lora.a0.data(), lora.a0.size());
  const uint32_t v0 = layer0 ? kNone : store.add_floats(lora.v0.data(), lora.v0.size());
  Scratch s;
  const uint32_t w_mid = s.add(lora.w_mid), a_mid = s.add(lora.a_mid), g_mid = s.add(lora.g_mid);
  const uint32_t v_mid = layer0 ? kNone : s.add(lora.v_mid);
  run_wkv(io, store, s, C, N, seqs, layer0,
          [&](VkCommandBuffer cmd, VkBuffer scratch, VkBuffer state, VkBuffer meta_buf, WkvPush p) {
            p.a = a_mid;
            p.decay = w_mid;
            p.g = g_mid;
            p.nu = v_mid;
            std::array<VkBuffer, 4> weights;
            std::array<uint32_t, 4> offsets;
            for (size_t i = 0; i < 4; ++i) {
              if (m[i].pieces.size() != 1) fail(ErrorCode::argument, "OpRunner::wkv_lora: a split matrix");
              weights[i] = store.arena(m[i].pieces[0].arena);
              offsets[i] = m[i].pieces[0].offset;
            }
            const WkvLoraPush lp{.wkv = p,
                                 .w2_off = offsets[0],
                                 .a2_off = offsets[1],
                                 .g2_off = offsets[2],
                                 .v2_off = offsets[3],
                                 .w0 = w0,
                                 .a0 = a0,
                                 .v0 = v0};
            kernels_->wkv_lora(cmd, scratch, store.vectors(), state, meta_buf, weights, lp, shape, uint32_t(C / N),
                               uint32_t(seqs.size()));
          });
}

}  // namespace rwkv::vk
