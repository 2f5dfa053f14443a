// VulkanBackend::step: splitting a batch into sub-steps that fit the scratch buffer, the
// per-step tables, recording (cached per batch shape) and the debug captures.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>

#include "backend/vulkan/vulkan_backend.h"
#include "common/error.h"

namespace rwkv::vk {
namespace {

// Tables in the meta buffer, each meta_stride_ uint32 long, in this order.
enum MetaTable : uint32_t { kTokens, kRowSlot, kRowFlags, kSeqStart, kSeqRows, kSeqSlot, kLogitRows };
constexpr uint32_t kFirstRow = 1, kLastRow = 2;

}  // namespace

std::vector<std::vector<StepPart>> VulkanBackend::split(std::span<const SeqTokens> batch) const {
  // Greedy: sequences in order, as many tokens as the row and logits-row limits allow.
  // Logits rows keep batch order because sequences and their tokens keep their order.
  std::vector<std::vector<StepPart>> subs(1);
  uint32_t rows = 0, lrows = 0;
  const uint32_t row_cap = sl_.rows_cap, logit_cap = logits_rows_cap_;
  for (const SeqTokens& seq : batch) {
    int off = 0;
    while (off < seq.n_tokens) {
      uint32_t k = std::min<uint32_t>(uint32_t(seq.n_tokens - off), row_cap - rows);
      if (seq.all_logits) {
        k = std::min(k, logit_cap - lrows);
      } else if (off + int(k) == seq.n_tokens && lrows == logit_cap) {
        --k;  // the last token needs a logits row: leave it for the next sub-step
      }
      if (k == 0) {
        subs.emplace_back();
        rows = lrows = 0;
        continue;
      }
      StepPart part;
      part.slot = seq.slot;
      part.tokens = seq.tokens + off;
      part.n = int(k);
      part.all_logits = seq.all_logits;
      part.ends = off + int(k) == seq.n_tokens;
      subs.back().push_back(part);
      rows += k;
      lrows += seq.all_logits ? k : (part.ends ? 1 : 0);
      off += int(k);
    }
  }
  return subs;
}

void VulkanBackend::step(std::span<const SeqTokens> batch, float* logits) {
  if (model_ == nullptr) fail(ErrorCode::argument, "vulkan: step() before load()");
  std::set<int> seen;
  for (const SeqTokens& s : batch) {
    check_slot(s.slot, "step");
    if (!seen.insert(s.slot).second) {
      fail(ErrorCode::argument, "vulkan: step: slot " + std::to_string(s.slot) + " appears twice in one batch");
    }
    if (s.n_tokens < 1 || s.tokens == nullptr) {
      fail(ErrorCode::argument, "vulkan: step: slot " + std::to_string(s.slot) + " has no tokens");
    }
    for (int i = 0; i < s.n_tokens; ++i) {
      if (s.tokens[i] < 0 || s.tokens[i] >= hp_.n_vocab) {
        fail(ErrorCode::argument, "vulkan: step: token " + std::to_string(s.tokens[i]) + " out of range (vocabulary " +
                                      std::to_string(hp_.n_vocab) + ")");
      }
    }
  }
  if (batch.empty()) return;
  float* out = logits;
  for (const std::vector<StepPart>& parts : split(batch)) {
    run_substep(parts, out);
    for (const StepPart& p : parts) out += size_t(p.all_logits ? p.n : (p.ends ? 1 : 0)) * size_t(hp_.n_vocab);
  }
}

void VulkanBackend::ensure_logits(uint32_t R) {
  if (R <= logits_rows_) return;
  // Grows in powers of two so that a long run re-records its command buffers rarely.
  uint32_t rows = 1;
  while (rows < R) rows *= 2;
  rows = std::min(rows, logits_rows_cap_);
  ctx_->fn().vkDeviceWaitIdle(ctx_->device());
  invalidate_commands();
  const uint64_t bytes = uint64_t(rows) * uint64_t(hp_.n_vocab) * 4;
  logits_ = Buffer(*ctx_, bytes, MemoryKind::readback, "logits");
  logits_rows_ = rows;
}

void VulkanBackend::run_substep(const std::vector<StepPart>& parts, float* logits) {
  uint32_t* meta = reinterpret_cast<uint32_t*>(meta_.mapped());
  const auto table = [&](MetaTable t) { return meta + size_t(t) * meta_stride_; };
  uint32_t T = 0, R = 0;
  logit_rows_host_.clear();
  for (size_t s = 0; s < parts.size(); ++s) {
    const StepPart& p = parts[s];
    table(kSeqStart)[s] = T;
    table(kSeqRows)[s] = uint32_t(p.n);
    table(kSeqSlot)[s] = uint32_t(p.slot);
    for (int i = 0; i < p.n; ++i, ++T) {
      table(kTokens)[T] = uint32_t(p.tokens[i]);
      table(kRowSlot)[T] = uint32_t(p.slot);
      table(kRowFlags)[T] = (i == 0 ? kFirstRow : 0) | (i == p.n - 1 ? kLastRow : 0);
      if (p.all_logits || (p.ends && i == p.n - 1)) {
        table(kLogitRows)[R++] = T;
        logit_rows_host_.push_back(T);
      }
    }
  }
  const uint32_t S = uint32_t(parts.size());
  if (R > 0) ensure_logits(R);
  uint32_t most = 0;  // rows of the longest sequence
  for (const StepPart& p : parts) most = std::max(most, uint32_t(p.n));
  WkvForm form = WkvForm::fused;
  if (most >= Kernels::wkv_scan_min_tokens) {
    form = WkvForm::scan;
  } else if (most <= Kernels::wkv_lora_max_rows && T <= Kernels::matvec_max_tokens) {
    form = WkvForm::folded;
  }

  // Logits into a buffer from alloc_host (from its start) are written there by the head.
  const Buffer* direct = nullptr;
  {
    std::lock_guard lock(host_buffers_->mutex);
    if (host_buffers_->released != host_released_seen_) {  // a recording may bind a freed buffer
      invalidate_commands();
      host_released_seen_ = host_buffers_->released;
    }
    const auto it = host_buffers_->spans.find(logits);
    if (R > 0 && !hook_ && it != host_buffers_->spans.end() && it->second.second >= uint64_t(R) * hp_.n_vocab)
      direct = it->second.first;
  }
  head_out_ = direct ? direct->handle() : logits_.handle();
  if (!hook_) {
    const auto key = std::make_tuple(T, S, R, form, head_out_);
    auto it = commands_.find(key);
    if (it == commands_.end()) {
      // Keeps a handful of shapes; a workload with many shapes re-records now and then.
      if (commands_.size() >= 32) invalidate_commands();
      Recorded rec;
      rec.cmd = ctx_->begin_commands();
      try {
        profiler_->begin(rec.cmd);
        record(rec.cmd, T, S, R, form, false);
        check(ctx_->fn().vkEndCommandBuffer(rec.cmd), "vkEndCommandBuffer");
      } catch (...) {
        ctx_->free_commands(rec.cmd);
        throw;
      }
      rec.labels = profiler_->take_labels();
      it = commands_.emplace(key, std::move(rec)).first;
    }
    const auto submitted = std::chrono::steady_clock::now();
    ctx_->submit_and_wait(it->second.cmd, false);
    profiler_->collect(it->second.labels, T,
                       std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - submitted).count());
  } else {
    VkCommandBuffer cmd = ctx_->begin_commands();
    try {
      record(cmd, T, S, R, form, true);
      flush_captures(cmd);
    } catch (...) {
      ctx_->free_commands(cmd);
      captures_.clear();
      throw;
    }
    ctx_->free_commands(cmd);
  }
  if (R > 0 && direct) {
    ctx_->invalidate(*direct);
  } else if (R > 0) {
    ctx_->invalidate(logits_);
    std::memcpy(logits, logits_.mapped(), size_t(R) * size_t(hp_.n_vocab) * 4);
  }
}

void VulkanBackend::record_matrices(VkCommandBuffer cmd, const MatStage& stage, uint32_t n_tok, VkBuffer y, bool gather,
                                    MatF16 f16) {
  MatBindings b;
  b.vecs = store_->vectors();
  b.x = scratch_.handle();
  b.y = y;
  b.jobs = jobs_.handle();
  b.meta = meta_device_.handle();
  b.split_k = mat_scratch_.handle();
  b.count_words = mat_counters_;
  b.part_off = mat_counters_;
  b.part_words = mat_scratch_.size() / 4 - mat_counters_;
  for (const MatGroup& g : stage.groups) {
    b.weights = g.weights;
    const uint32_t gather_off = gather ? uint32_t(kLogitRows) * meta_stride_ : 0;
    const MatmulPlan used = kernels_->matrix(cmd, g.type, b, g.jobs, n_tok, gather_off, MatPath::automatic, f16);
    // The stage's groups may run concurrently: each takes its own scratch ranges.
    b.count_off += used.count_words;
    b.count_words -= used.count_words;
    b.part_off += uint32_t(used.part_words);
    b.part_words -= used.part_words;
  }
}

void VulkanBackend::record(VkCommandBuffer& cmd, uint32_t T, uint32_t S, uint32_t R, WkvForm wkv_form, bool debug) {
  const ScratchLayout& s = sl_;
  const bool scan = wkv_form == WkvForm::scan;
  const uint32_t C = uint32_t(hp_.n_embd), F = uint32_t(hp_.n_ffn), ms = s.rows_cap * C;
  const uint32_t M = meta_stride_;
  const uint32_t slot_stride = uint32_t(hp_.state_floats_per_layer());
  const VkBuffer scratch = scratch_.handle(), vecs = store_->vectors(), meta = meta_device_.handle();
  Kernels& k = *kernels_;
  // A barrier between dependent dispatches; with profiling, also the end of an interval.
  const auto sync = [&](const char* label) {
    k.barrier(cmd);
    if (!debug) profiler_->mark(cmd, label);
  };

  // The step's tables, written by the host before the submit, into device memory: the
  // shaders read them often, and host-visible memory may sit across the PCIe bus.
  const VkBufferCopy tables{0, 0, uint64_t(M) * 7 * 4};
  ctx_->fn().vkCmdCopyBuffer(cmd, meta_.handle(), meta, 1, &tables);
  k.from_transfer(cmd);
  if (!debug) profiler_->mark(cmd, "tables");

  for (const DeviceMatrix::Piece& piece : tok_embd_.pieces) {
    const EmbedPush p{.w_off = piece.offset,
                      .row_bytes = tok_embd_.row_bytes,
                      .piece_start = piece.row_begin,
                      .piece_rows = piece.rows,
                      .C = C,
                      .emb_off = s.emb,
                      .h_off = s.h_a,
                      .ln_w = embd_ln_w_,
                      .ln_b = embd_ln_b_,
                      .eps = hp_.ln_eps,
                      .tok_off = kTokens * M};
    k.embed(cmd, tok_embd_.type, store_->arena(piece.arena), vecs, scratch, meta, p, T);
  }
  sync("embed");
  if (debug) {
    k.to_transfer(cmd);
    capture(cmd, -1, "embed", s.emb, T, C);
    capture(cmd, -1, "embed.ln", s.h_a, T, C);
    flush_captures(cmd);
  }

  // Steps on the tensor-core matmul pass the big products' inputs (mixes, the WKV output, the
  // FFN hidden units) between dispatches as float16: the matmul then reads a third fewer
  // bytes (kernels.h MatF16). The debug hook reads them as float32.
  const bool f16_step = !debug && k.coopmat_for(T) && C % 8 == 0;
  for (int l = 0; l < hp_.n_layer; ++l) {
    const LayerPlan& L = layers_[size_t(l)];
    // Per layer, where its stages' layouts allow (MatStage::x16_ok, y16_ok).
    const bool f16 = f16_step && L.in.x16_ok && L.key.x16_ok;
    const MatF16 f16_in{.x = f16};
    const MatF16 f16_out{.x = f16 && scan && L.out.x16_ok};  // only the prefill WKV writes float16
    const bool f16_hidden = f16 && L.key.y16_ok && L.value.x16_ok;
    const VkBuffer state = states_[size_t(l)].handle();
    const VkBuffer prev_state = states_[size_t(l > 0 ? l - 1 : 0)].handle();
    // h_a + ffn_out(l-1) -> h_b; commits layer l-1's FFN shift (its readers are done).
    const LnMixPush att{.C = C,
                        .h_in = s.h_a,
                        .delta = l > 0 ? s.ffn_out : kNone,
                        .h_out = s.h_b,
                        .xln = s.xa,
                        .mix = s.mix,
                        .mix_stride = ms,
                        .nmix = 6,
                        .mu = L.mu6,
                        .ln_w = L.ln1_w,
                        .ln_b = L.ln1_b,
                        .eps = hp_.ln_eps,
                        .slot_stride = slot_stride,
                        .shift_off = 0,
                        .commit_src = l > 0 ? s.xf : kNone,
                        .commit_off = C,
                        .row_slot = kRowSlot * M,
                        .row_flags = kRowFlags * M};
    k.ln_mix(cmd, scratch, vecs, state, prev_state, meta, att, T, f16);
    sync("ln_mix");
    record_matrices(cmd, L.in, T, scratch, false, f16_in);
    sync("mat.in");
    // Steps of short sequences fold the LoRA up-projections into the wkv dispatch where the
    // layer allows it: one dispatch and barrier fewer. The debug hook captures decay, a and g,
    // and the other forms read them: those keep the matrix stage.
    const bool fold = wkv_form == WkvForm::folded && L.fold.shape.invocations != 0 && !debug;
    if (!fold) {
      record_matrices(cmd, L.lora, T, scratch, false);
      sync("mat.lora");
    }
    const WkvPush wkv{.C = C,
                      .r = s.r,
                      .k = s.k,
                      .v = s.v,
                      .a = s.a,
                      .decay = s.decay,
                      .g = s.g,
                      .nu = l > 0 ? s.nu : kNone,
                      .v_first = s.v_first,
                      .xa = s.xa,
                      .out = s.att_y,
                      .dbg = debug || scan ? s.dbg : kNone,
                      .dbg_stride = ms,
                      .k_k = L.k_k,
                      .k_a = L.k_a,
                      .r_k = L.r_k,
                      .lnx_w = L.lnx_w,
                      .lnx_b = L.lnx_b,
                      .gn_eps = hp_.gn_eps,
                      .slot_stride = slot_stride,
                      .seq_start = kSeqStart * M,
                      .seq_rows = kSeqRows * M,
                      .seq_slot = kSeqSlot * M};
    if (scan) {
      k.wkv_prefill(cmd, scratch, vecs, state, meta, wkv, uint32_t(hp_.n_head), S, T, uint32_t(hp_.head_size), {},
                    f16_out.x);
    } else if (fold) {
      WkvLoraPush p{.wkv = wkv,
                    .w2_off = L.fold.offsets[0],
                    .a2_off = L.fold.offsets[1],
                    .g2_off = L.fold.offsets[2],
                    .v2_off = L.fold.offsets[3],
                    .w0 = L.fold.w0,
                    .a0 = L.fold.a0,
                    .v0 = L.fold.v0};
      p.wkv.a = s.a_mid;
      p.wkv.decay = s.w_mid;
      p.wkv.g = s.g_mid;
      p.wkv.nu = l > 0 ? s.v_mid : kNone;
      k.wkv_lora(cmd, scratch, vecs, state, meta, L.fold.weights, p, L.fold.shape, uint32_t(hp_.n_head), S);
    } else {
      k.wkv(cmd, scratch, vecs, state, meta, wkv, uint32_t(hp_.n_head), S, uint32_t(hp_.head_size));
    }
    sync("wkv");
    record_matrices(cmd, L.out, T, scratch, false, f16_out);
    sync("mat.out");
    const LnMixPush ffn{.C = C,
                        .h_in = s.h_b,
                        .delta = s.att_out,
                        .h_out = s.h_a,
                        .xln = s.xf,
                        .mix = s.xk,
                        .mix_stride = ms,
                        .nmix = 1,
                        .mu = L.ffn_mu,
                        .ln_w = L.ln2_w,
                        .ln_b = L.ln2_b,
                        .eps = hp_.ln_eps,
                        .slot_stride = slot_stride,
                        .shift_off = C,
                        .commit_src = kNone,
                        .commit_off = 0,
                        .row_slot = kRowSlot * M,
                        .row_flags = kRowFlags * M};
    k.ln_mix(cmd, scratch, vecs, state, state, meta, ffn, T, f16);
    sync("ln_mix");
    // The hidden units go out pre-scaled by the value product's x_scale.
    record_matrices(cmd, L.key, T, scratch, false, {.x = f16, .y = f16_hidden, .y_scale = L.value_x_scale});
    sync("mat.key");
    if (T == 1 && !L.value_t.pieces.empty()) {
      // One row: the hidden units that ReLU^2 zeroed cost no weight bytes.
      const DeviceMatrix::Piece& piece = L.value_t.pieces[0];
      const FfnSparsePush p{
          .w_off = piece.offset / 16, .s_off = 0, .C = C, .F = F, .h_off = s.hidden, .y_off = s.ffn_out, .part_off = 0};
      k.ffn_sparse(cmd, L.value_t.type, store_->arena(piece.arena), scratch, sparse_parts_.handle(), p, L.sparse);
    } else {
      record_matrices(cmd, L.value, T, scratch, false, {.x = f16_hidden});
    }
    sync("mat.value");
    if (debug) {
      // The layer's output h_a + ffn_out, materialised only for the hook.
      const LnMixPush sum{.C = C,
                          .h_in = s.h_a,
                          .delta = s.ffn_out,
                          .h_out = s.layer_out,
                          .xln = s.head_in,
                          .mix = 0,
                          .mix_stride = 0,
                          .nmix = 0,
                          .mu = 0,
                          .ln_w = out_ln_w_,
                          .ln_b = out_ln_b_,
                          .eps = hp_.ln_eps,
                          .slot_stride = slot_stride,
                          .shift_off = kNone,
                          .commit_src = kNone,
                          .commit_off = 0,
                          .row_slot = kRowSlot * M,
                          .row_flags = kRowFlags * M};
      k.ln_mix(cmd, scratch, vecs, state, state, meta, sum, T);
      k.to_transfer(cmd);
      const char* mix_names[6] = {"att.xr", "att.xw", "att.xk", "att.xv", "att.xa", "att.xg"};
      capture(cmd, l, "att.ln", s.xa, T, C);
      for (uint32_t i = 0; i < 6; ++i) capture(cmd, l, mix_names[i], s.mix + i * ms, T, C);
      capture(cmd, l, "att.r", s.r, T, C);
      capture(cmd, l, "att.decay", s.decay, T, C);
      capture(cmd, l, "att.k", s.k, T, C);
      capture(cmd, l, "att.v", s.dbg + 2 * ms, T, C);
      capture(cmd, l, "att.a", s.a, T, C);
      capture(cmd, l, "att.g", s.g, T, C);
      capture(cmd, l, "att.kk", s.dbg, T, C);
      capture(cmd, l, "att.k_mod", s.dbg + ms, T, C);
      capture(cmd, l, "att.wkv", s.dbg + 3 * ms, T, C);
      capture(cmd, l, "att.lnx", s.dbg + 4 * ms, T, C);
      capture(cmd, l, "att.out", s.att_out, T, C);
      capture(cmd, l, "ffn.ln", s.xf, T, C);
      capture(cmd, l, "ffn.xk", s.xk, T, C);
      capture(cmd, l, "ffn.hidden", s.hidden, T, F);
      capture(cmd, l, "ffn.out", s.ffn_out, T, C);
      capture(cmd, l, "layer.out", s.layer_out, T, C);
      flush_captures(cmd);
    }
  }

  // LN_out over every row (cheap), committing the last layer's FFN shift; head on R rows.
  const VkBuffer last_state = states_.back().handle();
  const LnMixPush fin{.C = C,
                      .h_in = s.h_a,
                      .delta = s.ffn_out,
                      .h_out = kNone,
                      .xln = s.head_in,
                      .mix = 0,
                      .mix_stride = 0,
                      .nmix = 0,
                      .mu = 0,
                      .ln_w = out_ln_w_,
                      .ln_b = out_ln_b_,
                      .eps = hp_.ln_eps,
                      .slot_stride = slot_stride,
                      .shift_off = kNone,
                      .commit_src = s.xf,
                      .commit_off = C,
                      .row_slot = kRowSlot * M,
                      .row_flags = kRowFlags * M};
  k.ln_mix(cmd, scratch, vecs, last_state, last_state, meta, fin, T);
  sync("ln_out");
  // The head writes the logits straight into host-visible memory: no copy and no barrier
  // interval after it (a 0.1B decode step spent ~20 us of ~670 in that copy).
  if (R > 0) record_matrices(cmd, head_stage_, R, head_out_, true);
  if (debug) {
    k.to_transfer(cmd);
    capture(cmd, -1, "head.ln", s.head_in, T, C);
    if (R > 0) capture(cmd, -1, "logits", 0, R, uint32_t(hp_.n_vocab), head_out_);
  }
  k.host_barrier(cmd);
  if (!debug) profiler_->mark(cmd, "head");
}

void VulkanBackend::capture(VkCommandBuffer cmd, int layer, const char* name, uint32_t region, uint32_t rows,
                            uint32_t width, VkBuffer source) {
  const uint64_t bytes = uint64_t(rows) * width * 4;
  if (debug_.size() < debug_used_ + bytes) {
    // Captures of one flush are recorded before any runs: grow only between flushes.
    if (debug_used_ != 0) flush_captures(cmd);
    const uint32_t C = uint32_t(hp_.n_embd);
    const uint64_t layer_bytes = uint64_t(sl_.rows_cap) * (22ull * C + uint64_t(hp_.n_ffn)) * 4;
    const uint64_t logit_bytes = uint64_t(logits_rows_) * uint64_t(hp_.n_vocab) * 4;
    debug_ = Buffer(*ctx_, std::max({layer_bytes, logit_bytes + uint64_t(sl_.rows_cap) * C * 4, bytes}),
                    MemoryKind::readback, "debug captures");
  }
  const VkBufferCopy copy{uint64_t(region) * 4, debug_used_, bytes};
  ctx_->fn().vkCmdCopyBuffer(cmd, source == VK_NULL_HANDLE ? scratch_.handle() : source, debug_.handle(), 1, &copy);
  captures_.push_back({layer, name, debug_used_, rows, width});
  debug_used_ += bytes;
}

void VulkanBackend::flush_captures(VkCommandBuffer& cmd) {
  kernels_->host_barrier(cmd);
  ctx_->submit_and_wait(cmd);
  ctx_->free_commands(cmd);
  cmd = ctx_->begin_commands();
  if (captures_.empty()) return;
  ctx_->invalidate(debug_);
  std::vector<Capture> done;
  done.swap(captures_);
  debug_used_ = 0;
  std::vector<float> selected;
  for (const Capture& c : done) {
    const float* data = reinterpret_cast<const float*>(debug_.mapped() + c.offset);
    if (std::strcmp(c.name, "head.ln") == 0) {
      // Only the rows that produce logits, as the hook's contract says.
      selected.clear();
      for (uint32_t row : logit_rows_host_)
        selected.insert(selected.end(), data + size_t(row) * c.width, data + size_t(row + 1) * c.width);
      if (!logit_rows_host_.empty())
        hook_(c.layer, c.name, int(logit_rows_host_.size()), int(c.width), selected.data());
      continue;
    }
    hook_(c.layer, c.name, int(c.rows), int(c.width), data);
  }
}

}  // namespace rwkv::vk
