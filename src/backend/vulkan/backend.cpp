// VulkanBackend: device selection, weight upload, the static plan of a step (scratch
// layout, matrix jobs), and the state slots. Step recording is in step.cpp.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "backend/registry.h"
#include "backend/vulkan/vulkan_backend.h"
#include "common/error.h"

namespace rwkv::vk {
namespace {

// Rows of activations one sub-step holds at most: prefill beyond this runs in several
// sub-steps (the recurrence carries over through the state).
constexpr uint32_t kMaxRowsPerStep = 512;

// Invocations per workgroup of the WKV with the LoRA up-projections folded in (LoraFold),
// from RWKV_VULKAN_LORA_FOLD: unset or 1, the default (Kernels::wkv_lora_invocations); 0, no
// fold (every layer keeps the mat.lora stage: the comparison); a count from the head size to
// 256, that many (for measurements).
uint32_t lora_fold_invocations(uint32_t head_size) {
  const char* env = std::getenv("RWKV_VULKAN_LORA_FOLD");
  if (env == nullptr || std::strcmp(env, "") == 0 || std::strcmp(env, "1") == 0) {
    return Kernels::wkv_lora_invocations(head_size);
  }
  char* end = nullptr;
  const unsigned long n = std::strtoul(env, &end, 10);
  if (*end != '\0' || n > 256 || (n != 0 && n < head_size)) {
    fail(ErrorCode::argument, "vulkan: RWKV_VULKAN_LORA_FOLD=" + std::string(env) +
                                  " is not 0, 1 or a count of invocations from the head size (" +
                                  std::to_string(head_size) + ") to 256");
  }
  return uint32_t(n);
}

}  // namespace

VulkanBackend::VulkanBackend(const BackendOptions& options, bool allow_cpu_devices) {
  ctx_ = std::shared_ptr<Context>(Context::create(options.device, allow_cpu_devices));
  kernels_ = std::make_unique<Kernels>(*ctx_);
  profiler_ = std::make_unique<Profiler>(*ctx_);
  verbose_ = options.verbose;
  if (options.verbose) {
    const VulkanDeviceInfo& d = ctx_->info();
    std::fprintf(stderr, "vulkan: device %d: %s (%s, %s, subgroup %u)\n", d.index, d.name.c_str(), d.type.c_str(),
                 d.driver.c_str(), d.subgroup_size);
  }
}

VulkanBackend::~VulkanBackend() {
  if (ctx_ == nullptr) return;
  ctx_->fn().vkDeviceWaitIdle(ctx_->device());
  invalidate_commands();
}

// A compute-shader copy (copy.comp) between two device-local buffers of up to 256 MiB (five
// times the L2 of an H100), a barrier after each, timed by the queue's timestamps: the best
// of ten after two that warm the clocks up. 0 on a queue without timestamps.
double VulkanBackend::measure_bandwidth() {
  if (ctx_->limits().timestamp_period_ns <= 0) return 0;
  const uint64_t bytes =
      std::min({uint64_t(256) << 20, ctx_->info().memory_bytes / 16, ctx_->limits().max_storage_range}) / 256 * 256;
  if (bytes < (uint64_t(16) << 20)) return 0;
  const Functions& fn = ctx_->fn();
  Buffer src, dst;
  try {
    src = Buffer(*ctx_, bytes, MemoryKind::device, "bandwidth source");
    dst = Buffer(*ctx_, bytes, MemoryKind::device, "bandwidth copy");
  } catch (const Error&) {
    return 0;  // the device's memory is taken: no measurement rather than a failed bench
  }
  constexpr uint32_t kWarm = 2, kTimed = 10;
  VkQueryPoolCreateInfo ci{};
  ci.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
  ci.queryType = VK_QUERY_TYPE_TIMESTAMP;
  ci.queryCount = kTimed + 1;
  VkQueryPool pool = VK_NULL_HANDLE;
  if (fn.vkCreateQueryPool(ctx_->device(), &ci, nullptr, &pool) != VK_SUCCESS) return 0;
  const uint32_t words = uint32_t(bytes / 16);
  const uint32_t workgroups = std::min<uint32_t>(words / 256 / 8, ctx_->limits().max_workgroup_count[0]);
  const auto record = [&](VkCommandBuffer cmd) {
    fn.vkCmdFillBuffer(cmd, src.handle(), 0, VK_WHOLE_SIZE, 0x01010101u);
    fn.vkCmdResetQueryPool(cmd, pool, 0, kTimed + 1);
    kernels_->from_transfer(cmd);
    for (uint32_t i = 0; i < kWarm + kTimed; ++i) {
      if (i >= kWarm) fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, pool, i - kWarm);
      kernels_->copy(cmd, src.handle(), dst.handle(), words, workgroups);
      kernels_->barrier(cmd);
    }
    fn.vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, pool, kTimed);
  };
  try {
    ctx_->run(record);
  } catch (...) {
    fn.vkDestroyQueryPool(ctx_->device(), pool, nullptr);
    throw;
  }
  double best = 0;
  uint64_t ticks[kTimed + 1] = {};
  if (fn.vkGetQueryPoolResults(ctx_->device(), pool, 0, kTimed + 1, sizeof ticks, ticks, 8,
                               VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
    best = 1e30;
    for (uint32_t i = 0; i < kTimed; ++i)
      best = std::min(best, double(ticks[i + 1] - ticks[i]) * ctx_->limits().timestamp_period_ns * 1e-9);
  }
  fn.vkDestroyQueryPool(ctx_->device(), pool, nullptr);
  return best > 0 ? 2.0 * double(bytes) / best / 1e9 : 0;
}

HostFloats VulkanBackend::alloc_host(size_t n) {
  n = std::max<size_t>(n, 1);
  const uint64_t bytes = uint64_t(n) * 4;
  if (bytes > ctx_->limits().max_storage_range) return Backend::alloc_host(n);  // one binding must see it all
  std::shared_ptr<Buffer> buffer;
  try {
    buffer = std::make_shared<Buffer>(*ctx_, bytes, MemoryKind::readback, "logits (alloc_host)");
  } catch (const Error&) {
    return Backend::alloc_host(n);  // host-visible memory is scarce here: plain memory still works
  }
  auto* p = reinterpret_cast<float*>(buffer->mapped());
  {
    std::lock_guard lock(host_buffers_->mutex);
    host_buffers_->spans[p] = {buffer.get(), uint64_t(n)};
  }
  return HostFloats(p, [ctx = ctx_, buffer, registry = host_buffers_](float* q) mutable {
    {
      std::lock_guard lock(registry->mutex);
      registry->spans.erase(q);
      ++registry->released;
    }
    buffer.reset();  // before the context it belongs to
    ctx.reset();
  });
}

void VulkanBackend::invalidate_commands() {
  for (auto& [key, rec] : commands_) ctx_->free_commands(rec.cmd);
  commands_.clear();
}

void VulkanBackend::plan_scratch() {
  const uint32_t C = uint32_t(hp_.n_embd);
  // Widths of the regions in the order of ScratchLayout.
  struct Region {
    uint32_t* field;
    uint32_t width;
  };
  ScratchLayout& s = sl_;
  const Region regions[] = {
      {&s.h_a, C},
      {&s.h_b, C},
      {&s.att_out, C},
      {&s.ffn_out, C},
      {&s.xa, C},
      {&s.mix, 6 * C},
      {&s.r, C},
      {&s.k, C},
      {&s.v, C},
      {&s.decay, C},
      {&s.a, C},
      {&s.nu, C},
      {&s.g, C},
      {&s.w_mid, uint32_t(hp_.rank_w)},
      {&s.a_mid, uint32_t(hp_.rank_a)},
      {&s.v_mid, uint32_t(hp_.rank_v)},
      {&s.g_mid, uint32_t(hp_.rank_g)},
      {&s.v_first, C},
      {&s.att_y, C},
      {&s.xf, C},
      {&s.xk, C},
      {&s.hidden, uint32_t(hp_.n_ffn)},
      {&s.emb, C},
      {&s.head_in, C},
      {&s.dbg, 5 * C},
      {&s.layer_out, C},
  };
  uint64_t per_row = 0;
  for (const Region& r : regions) per_row += (r.width + 3) / 4 * 4;
  const uint64_t fit = ctx_->limits().max_storage_range / 4 / (per_row + 4);
  s.rows_cap = uint32_t(std::min<uint64_t>({kMaxRowsPerStep, fit, ctx_->limits().max_workgroup_count[1]}));
  if (s.rows_cap == 0) {
    fail(ErrorCode::unsupported, "vulkan: one row of activations (" + std::to_string(per_row * 4) +
                                     " bytes) exceeds the device's buffer range");
  }
  uint64_t off = 0;
  for (const Region& r : regions) {
    *r.field = uint32_t(off);
    off += uint64_t(s.rows_cap) * ((r.width + 3) / 4 * 4);
  }
  s.floats = off;
  const uint64_t logits_fit = ctx_->limits().max_storage_range / 4 / uint64_t(hp_.n_vocab);
  logits_rows_cap_ = uint32_t(std::min<uint64_t>(s.rows_cap, logits_fit));
  if (logits_rows_cap_ == 0)
    fail(ErrorCode::unsupported, "vulkan: one row of logits exceeds the device's buffer range");
}

MatStage VulkanBackend::build_stage(const std::vector<JobSpec>& specs, std::vector<MatJob>& jobs) {
  // Every job of the stage: one per matrix piece, split to the workgroup-count limit.
  std::vector<std::pair<MatJob, VkBuffer>> all;
  const uint32_t max_rows = kernels_->max_job_rows();
  for (const JobSpec& spec : specs) {
    const DeviceMatrix& m = *spec.m;
    for (const DeviceMatrix::Piece& piece : m.pieces) {
      for (uint32_t r = 0; r < piece.rows; r += max_rows) {
        MatJob job;
        job.w_off = piece.offset + r * m.row_bytes;
        job.row_bytes = m.row_bytes;
        job.rows = std::min(max_rows, piece.rows - r);
        job.cols = m.cols;
        job.x_off = spec.x_off;
        job.x_stride = spec.x_stride;
        job.y_off = spec.y_off + piece.row_begin + r;
        job.y_base = spec.y_off;
        job.y_stride = spec.y_stride;
        job.flags = spec.flags;
        job.bias_off = spec.bias_off == kNone ? kNone : spec.bias_off + piece.row_begin + r;
        job.type = uint32_t(m.type);
        job.x_scale = spec.x_scale;
        all.emplace_back(job, store_->arena(piece.arena));
      }
    }
  }
  // Groups of jobs that one dispatch can run: a single weight type and at most four weight
  // buffers. Each group's jobs are contiguous in the table.
  MatStage stage;
  stage.x16_ok = stage.y16_ok = !all.empty();
  for (const auto& [job, buffer] : all) {
    stage.x16_ok = stage.x16_ok && job.x_off % 4 == 0 && job.x_stride % 8 == 0;
    stage.y16_ok = stage.y16_ok && job.y_stride % 2 == 0 && (job.y_off - job.y_base) % 2 == 0;
  }
  struct Pending {
    MatGroup group;
    std::vector<MatJob> jobs;
    uint32_t used = 0;  // weight slots in use
  };
  std::vector<Pending> groups;
  for (auto [job, buffer] : all) {
    Pending* g = nullptr;
    for (Pending& p : groups) {
      if (p.group.type != TensorType(job.type)) continue;
      for (uint32_t i = 0; i < p.used && g == nullptr; ++i) {
        if (p.group.weights[i] == buffer) {
          g = &p;
          job.wbind = i;
        }
      }
      if (g == nullptr && p.used < 4) {
        g = &p;
        job.wbind = p.used;
        p.group.weights[p.used++] = buffer;
      }
      if (g != nullptr) break;
    }
    if (g == nullptr) {
      g = &groups.emplace_back();
      g->group.type = TensorType(job.type);
      g->group.weights[0] = buffer;
      g->used = 1;
      job.wbind = 0;
    }
    g->group.jobs.max_rows = std::max(g->group.jobs.max_rows, job.rows);
    g->group.jobs.max_cols = std::max(g->group.jobs.max_cols, job.cols);
    g->jobs.push_back(job);
  }
  for (Pending& p : groups) {
    for (uint32_t i = p.used; i < 4; ++i) p.group.weights[i] = p.group.weights[0];
    p.group.jobs.job_base = uint32_t(jobs.size());
    p.group.jobs.n_jobs = uint32_t(p.jobs.size());
    for (MatJob& job : p.jobs) {
      job.tile_base = p.group.jobs.row_tiles;
      p.group.jobs.row_tiles += (job.rows + Kernels::matmul_rows - 1) / Kernels::matmul_rows;
    }
    jobs.insert(jobs.end(), p.jobs.begin(), p.jobs.end());
    stage.groups.push_back(p.group);
  }
  return stage;
}

void VulkanBackend::load(std::shared_ptr<const Model> model, const ProgressFn& progress) {
  if (model_ != nullptr) fail(ErrorCode::argument, "vulkan: load() called twice");
  hp_ = model->hparams();
  const uint32_t N = uint32_t(hp_.head_size);
  if (N == 0 || N % 8 != 0 || N > 128 || N > ctx_->limits().max_workgroup_size_x) {
    fail(ErrorCode::unsupported,
         "vulkan: head size " + std::to_string(N) + " is not supported (a multiple of 8 up to 128)");
  }
  store_ = std::make_unique<WeightStore>(*ctx_);
  WeightStore& st = *store_;
  tok_embd_ = st.add_matrix(model->tok_embd);
  head_ = st.add_matrix(model->head);
  embd_ln_w_ = st.add_vector(model->embd_norm_w);
  embd_ln_b_ = st.add_vector(model->embd_norm_b);
  out_ln_w_ = st.add_vector(model->out_norm_w);
  out_ln_b_ = st.add_vector(model->out_norm_b);

  // Matrices must outlive build_stage; a deque-like reserve keeps their addresses fixed.
  struct LayerMats {
    DeviceMatrix wr, wk, wv, wo, w1, w2, a1, a2, v1, v2, g1, g2, key, value;
    uint32_t w0 = 0, a0 = 0, v0 = 0;
  };
  std::vector<LayerMats> mats(size_t(hp_.n_layer));
  layers_.assign(size_t(hp_.n_layer), LayerPlan{});
  for (int l = 0; l < hp_.n_layer; ++l) {
    const LayerWeights& w = model->layers[size_t(l)];
    LayerMats& m = mats[size_t(l)];
    LayerPlan& p = layers_[size_t(l)];
    m.wr = st.add_matrix(w.wr);
    m.wk = st.add_matrix(w.wk);
    m.wv = st.add_matrix(w.wv);
    m.wo = st.add_matrix(w.wo);
    m.w1 = st.add_matrix(w.w1);
    m.w2 = st.add_matrix(w.w2);
    m.a1 = st.add_matrix(w.a1);
    m.a2 = st.add_matrix(w.a2);
    if (l > 0) {  // layer 0's v0/v1/v2 are dummies (spec §3.2)
      m.v1 = st.add_matrix(w.v1);
      m.v2 = st.add_matrix(w.v2);
      m.v0 = st.add_vector(w.v0);
    }
    m.g1 = st.add_matrix(w.g1);
    m.g2 = st.add_matrix(w.g2);
    m.key = st.add_matrix(w.ffn_key);
    m.value = st.add_matrix(w.ffn_value);
    m.w0 = st.add_vector(w.w0);
    m.a0 = st.add_vector(w.a0);
    p.ln1_w = st.add_vector(w.att_norm_w);
    p.ln1_b = st.add_vector(w.att_norm_b);
    p.ln2_w = st.add_vector(w.ffn_norm_w);
    p.ln2_b = st.add_vector(w.ffn_norm_b);
    p.mu6 = st.add_vector(w.lerp_fused);
    p.ffn_mu = st.add_vector(w.ffn_lerp_k);
    p.k_k = st.add_vector(w.k_k);
    p.k_a = st.add_vector(w.k_a);
    p.r_k = st.add_vector(w.r_k);
    p.lnx_w = st.add_vector(w.lnx_w);
    p.lnx_b = st.add_vector(w.lnx_b);
  }

  plan_sparse_ffn(*model, st);
  store_->upload(progress);  // the stages below name the device buffers
  plan_scratch();
  const ScratchLayout& s = sl_;
  const uint32_t C = uint32_t(hp_.n_embd), F = uint32_t(hp_.n_ffn), ms = s.rows_cap * C;
  const uint32_t Dw = uint32_t(hp_.rank_w), Da = uint32_t(hp_.rank_a), Dv = uint32_t(hp_.rank_v),
                 Dg = uint32_t(hp_.rank_g);
  std::vector<MatJob> jobs;
  const uint32_t fold_invocations = lora_fold_invocations(N);
  int folded = 0;
  std::string unfit, first_unfit;  // why a layer keeps its mat.lora stage
  for (int l = 0; l < hp_.n_layer; ++l) {
    LayerMats& m = mats[size_t(l)];
    LayerPlan& p = layers_[size_t(l)];
    // x slots of the lerp output: r, w, k, v, a, g.
    const uint32_t xr = s.mix, xw = s.mix + ms, xk = s.mix + 2 * ms, xv = s.mix + 3 * ms, xa = s.mix + 4 * ms,
                   xg = s.mix + 5 * ms;
    // The LoRA down projections ahead of r, k, v: a stage's dispatches (one per weight type)
    // and a dispatch's jobs start in this order, and the float LoRA rows are the stage's
    // slowest workgroups; started last they were its tail. H100: 2.9B F16 decode +3.6%, Q8_0
    // +0.9% (bench/RESULTS-vulkan.md, session 18; the CUDA backend's run 109).
    std::vector<JobSpec> in = {
        {&m.w1, xw, C, s.w_mid, Dw, kActTanh, kNone},
        {&m.a1, xa, C, s.a_mid, Da, kActNone, kNone},
        {&m.g1, xg, C, s.g_mid, Dg, kActSigmoid, kNone},
    };
    // The up projections' stage (mat.lora): prefill, the debug hook and steps of many rows;
    // steps of short sequences fold them into the wkv dispatch where the layer allows
    // (p.fold, WkvForm::folded).
    std::vector<JobSpec> lora = {
        {&m.w2, s.w_mid, Dw, s.decay, C, kActDecay, m.w0},
        {&m.a2, s.a_mid, Da, s.a, C, kActSigmoid, m.a0},
        {&m.g2, s.g_mid, Dg, s.g, C, kActNone, kNone},
    };
    if (l > 0) {
      in.push_back({&m.v1, xv, C, s.v_mid, Dv, kActNone, kNone});
      lora.push_back({&m.v2, s.v_mid, Dv, s.nu, C, kActSigmoid, m.v0});
    }
    in.push_back({&m.wr, xr, C, s.r, C, kActNone, kNone});
    in.push_back({&m.wk, xk, C, s.k, C, kActNone, kNone});
    in.push_back({&m.wv, xv, C, s.v, C, kActNone, kNone});
    p.in = build_stage(in, jobs);
    p.lora = build_stage(lora, jobs);
    p.fold = plan_lora_fold({&m.w2, &m.a2, &m.g2, l > 0 ? &m.v2 : nullptr}, m.w0, m.a0, m.v0, fold_invocations, unfit);
    folded += p.fold.shape.invocations != 0 ? 1 : 0;
    if (first_unfit.empty()) first_unfit = unfit;
    p.out = build_stage({{&m.wo, s.att_y, C, s.att_out, C, kActNone, kNone}}, jobs);
    p.key = build_stage({{&m.key, s.xk, C, s.hidden, F, kActReluSq, kNone}}, jobs);
    // relu^2 values can pass float16's 65504: the tensor-core path scales them by 2^-8.
    p.value_x_scale = 1.0f / 256;
    p.value = build_stage({{&m.value, s.hidden, F, s.ffn_out, C, kActNone, kNone, p.value_x_scale}}, jobs);
  }
  head_stage_ = build_stage({{&head_, s.head_in, C, 0, uint32_t(hp_.n_vocab), kJobGather, kNone}}, jobs);
  if (verbose_) {
    std::fprintf(stderr, "vulkan: LoRA up-projections folded into the WKV on %d of %d layers (%u invocations)%s%s\n",
                 folded, hp_.n_layer, fold_invocations,
                 first_unfit.empty() ? "" : "; not where: ", first_unfit.c_str());
  }

  uint64_t sparse_words = 0;
  for (const LayerPlan& l : layers_) {
    if (!l.value_t.pieces.empty()) sparse_words = std::max(sparse_words, l.sparse.partial_words(C));
  }
  if (sparse_words > 0) {
    sparse_parts_ = Buffer(*ctx_, sparse_words * 4, MemoryKind::device, "sparse FFN partial sums");
    ctx_->run([&](VkCommandBuffer cmd) {
      ctx_->fn().vkCmdFillBuffer(cmd, sparse_parts_.handle(), 0, VK_WHOLE_SIZE, 0);  // the counters start at 0
    });
  }
  plan_matmul_scratch();
  jobs_ = Buffer(*ctx_, jobs.size() * sizeof(MatJob), MemoryKind::device, "matrix jobs");
  upload_bytes(*ctx_, jobs_.handle(), 0, jobs.data(), jobs.size() * sizeof(MatJob));
  scratch_ = Buffer(*ctx_, s.floats * 4, MemoryKind::device, "activations");
  meta_stride_ = s.rows_cap;
  meta_ = Buffer(*ctx_, uint64_t(meta_stride_) * 7 * 4, MemoryKind::staging, "step tables");
  meta_device_ = Buffer(*ctx_, uint64_t(meta_stride_) * 7 * 4, MemoryKind::device, "step tables");
  model_ = std::move(model);
  set_slots(1);
}

LoraFold VulkanBackend::plan_lora_fold(std::array<const DeviceMatrix*, 4> up, uint32_t w0, uint32_t a0, uint32_t v0,
                                       uint32_t invocations, std::string& unfit) const {
  LoraFold f;
  if (invocations == 0) return f;
  // Layer 0 has no V2, and the shader reads none there: A2 takes its place, with V2's usual
  // type (A2's) and rank, so that layer 0 shares the other layers' pipeline.
  const bool layer0 = up[3] == nullptr;
  if (layer0) up[3] = up[1];
  WkvLoraShape shape{.head_size = uint32_t(hp_.head_size), .invocations = invocations};
  for (size_t i = 0; i < 4; ++i) {
    const DeviceMatrix& m = *up[i];
    if (m.pieces.size() != 1) {
      unfit = "an up matrix split over weight buffers";
      return f;
    }
    shape.types[i] = m.type;
    shape.ranks[i] = i == 3 && layer0 ? uint32_t(hp_.rank_v) : m.cols;
    f.weights[i] = store_->arena(m.pieces[0].arena);
    f.offsets[i] = m.pieces[0].offset;
  }
  unfit = kernels_->wkv_lora_unfit(shape);
  if (!unfit.empty()) return f;
  f.shape = shape;
  f.w0 = w0;
  f.a0 = a0;
  f.v0 = layer0 ? kNone : v0;
  return f;
}

void VulkanBackend::plan_matmul_scratch() {
  // A stage's groups run without barriers between them, so each takes its own ranges; the
  // split (hence the scratch) depends on the rows of the step: every count from the matvec
  // limit up to a full sub-step. Counters first, partial sums after.
  const uint64_t cap = ctx_->limits().max_storage_range / 4;
  uint64_t counters = 0, parts = 0;
  const auto add_stage = [&](const MatStage& stage, uint32_t n_tok) {
    uint64_t c = 0, p = 0;
    for (const MatGroup& g : stage.groups) {
      const MatmulPlan plan = kernels_->matmul_plan(g.jobs, n_tok, cap / 2, cap / 2);
      c += plan.count_words;
      p += plan.part_words;
    }
    counters = std::max(counters, c);
    parts = std::max(parts, p);
  };
  for (uint32_t n_tok = Kernels::matvec_max_tokens + 1; n_tok <= sl_.rows_cap; ++n_tok) {
    add_stage(head_stage_, std::min(n_tok, logits_rows_cap_));
    for (const LayerPlan& p : layers_) {
      for (const MatStage* stage : {&p.in, &p.lora, &p.out, &p.key, &p.value}) add_stage(*stage, n_tok);
    }
  }
  if (parts == 0) return;
  mat_counters_ = uint32_t((std::min(counters, cap / 2) + 3) / 4 * 4);
  const uint64_t words = mat_counters_ + std::min(parts, cap / 2);
  mat_scratch_ = Buffer(*ctx_, words * 4, MemoryKind::device, "matmul split-K scratch");
  ctx_->run([&](VkCommandBuffer cmd) {
    ctx_->fn().vkCmdFillBuffer(cmd, mat_scratch_.handle(), 0, VK_WHOLE_SIZE, 0);  // the counters start at 0
  });
}

// The ReLU^2-sparse value product of one-row steps reads a transposed copy of each F16, BF16
// or Q8_0 value matrix: the matrix once more per layer (C x F x 2 bytes, Q8_0 C x F x 17 / 16;
// 2.9B F16: 32 x 52 MB). Like the CUDA backend's optional f16 copies, the copies are made only
// when they fit in half the device-local memory the model's weights leave free, and each in
// one buffer. RWKV_VULKAN_SPARSE_FFN=0 turns them off, as RWKV_CUDA_SPARSE_FFN=0 does on CUDA;
// Q8_0 takes them only with RWKV_VULKAN_SPARSE_FFN=all: on random weights (half the hidden
// units zero) the H100 decoded 2.9B Q8_0 at 352 tok/s with them against 377 without (F16: 324
// against 305; bench/RESULTS-vulkan.md, session 13). Trained models zero most units.
void VulkanBackend::plan_sparse_ffn(const Model& model, WeightStore& st) {
  const char* env = std::getenv("RWKV_VULKAN_SPARSE_FFN");
  const std::string mode = env != nullptr ? env : "";
  if (mode == "0") return;
  const uint32_t C = uint32_t(hp_.n_embd), F = uint32_t(hp_.n_ffn);
  // The layers whose value matrix the sparse product takes, and their copies' bytes.
  std::vector<bool> take(model.layers.size(), false);
  uint64_t copies = 0;
  for (size_t l = 0; l < model.layers.size(); ++l) {
    const TensorType type = model.layers[l].ffn_value.type;
    if (!sparse_ffn_supported(type, C) || (type == TensorType::Q8_0 && mode != "all")) continue;
    const uint64_t bytes = WeightStore::transposed_bytes(type, C, F);
    const SparseFfnShape shape = sparse_ffn_shape(type, C, F);
    if (!st.fits_one_arena(bytes) || shape.partial_words(C) * 4 > ctx_->limits().max_storage_range) continue;
    take[l] = true;
    layers_[l].sparse = shape;
    copies += bytes;
  }
  const uint64_t heap = ctx_->info().memory_bytes, planned = st.planned_bytes();
  if (copies == 0 || planned >= heap || copies > (heap - planned) / 2) return;
  for (size_t l = 0; l < model.layers.size(); ++l) {
    if (take[l]) layers_[l].value_t = st.add_transposed(model.layers[l].ffn_value);
  }
}

void VulkanBackend::set_slots(int n) {
  if (model_ == nullptr) fail(ErrorCode::argument, "vulkan: set_slots() before load()");
  if (n < 1) fail(ErrorCode::argument, "vulkan: set_slots(" + std::to_string(n) + "): at least one slot is needed");
  const uint64_t per_layer = hp_.state_floats_per_layer() * 4;
  const uint64_t bytes = per_layer * uint64_t(n);
  if (bytes > ctx_->limits().max_storage_range) {
    fail(ErrorCode::argument, "vulkan: " + std::to_string(n) + " slots need " + std::to_string(bytes) +
                                  " bytes of state per layer; the device binds at most " +
                                  std::to_string(ctx_->limits().max_storage_range) + " (" +
                                  std::to_string(ctx_->limits().max_storage_range / per_layer) + " slots)");
  }
  ctx_->fn().vkDeviceWaitIdle(ctx_->device());
  invalidate_commands();
  states_.clear();
  n_slots_ = 0;
  for (int l = 0; l < hp_.n_layer; ++l) states_.emplace_back(*ctx_, bytes, MemoryKind::device, "recurrent state");
  ctx_->run([&](VkCommandBuffer cmd) {
    for (const Buffer& b : states_) ctx_->fn().vkCmdFillBuffer(cmd, b.handle(), 0, VK_WHOLE_SIZE, 0);
  });
  n_slots_ = n;
}

void VulkanBackend::check_slot(int slot, const char* what) const {
  if (slot < 0 || slot >= n_slots_) {
    fail(ErrorCode::argument, std::string("vulkan: ") + what + ": slot " + std::to_string(slot) + " out of range (" +
                                  std::to_string(n_slots_) + " slots)");
  }
}

void VulkanBackend::reset_slot(int slot) {
  check_slot(slot, "reset_slot");
  const uint64_t bytes = hp_.state_floats_per_layer() * 4;
  ctx_->run([&](VkCommandBuffer cmd) {
    for (const Buffer& b : states_) ctx_->fn().vkCmdFillBuffer(cmd, b.handle(), bytes * uint64_t(slot), bytes, 0);
  });
}

void VulkanBackend::get_state(int slot, std::span<float> out) {
  check_slot(slot, "get_state");
  if (out.size() != hp_.state_floats()) fail(ErrorCode::argument, "vulkan: get_state: wrong buffer size");
  const uint64_t bytes = hp_.state_floats_per_layer() * 4;
  Buffer host(*ctx_, bytes * states_.size(), MemoryKind::readback, "state readback");
  ctx_->run([&](VkCommandBuffer cmd) {
    kernels_->to_transfer(cmd);  // the last step's state writes
    for (size_t l = 0; l < states_.size(); ++l) {
      const VkBufferCopy region{bytes * uint64_t(slot), bytes * l, bytes};
      ctx_->fn().vkCmdCopyBuffer(cmd, states_[l].handle(), host.handle(), 1, &region);
    }
    kernels_->host_barrier(cmd);
  });
  ctx_->invalidate(host);
  std::memcpy(out.data(), host.mapped(), bytes * states_.size());
}

void VulkanBackend::set_state(int slot, std::span<const float> in) {
  check_slot(slot, "set_state");
  if (in.size() != hp_.state_floats()) fail(ErrorCode::argument, "vulkan: set_state: wrong buffer size");
  const uint64_t bytes = hp_.state_floats_per_layer() * 4;
  Buffer host(*ctx_, bytes * states_.size(), MemoryKind::staging, "state upload");
  std::memcpy(host.mapped(), in.data(), bytes * states_.size());
  ctx_->run([&](VkCommandBuffer cmd) {
    for (size_t l = 0; l < states_.size(); ++l) {
      const VkBufferCopy region{bytes * l, bytes * uint64_t(slot), bytes};
      ctx_->fn().vkCmdCopyBuffer(cmd, host.handle(), states_[l].handle(), 1, &region);
    }
  });
}

}  // namespace rwkv::vk

namespace rwkv {

std::unique_ptr<Backend> make_vulkan_backend(const BackendOptions& options, bool allow_cpu_devices) {
  return std::make_unique<vk::VulkanBackend>(options, allow_cpu_devices);
}

}  // namespace rwkv
