#include "backend/vulkan/kernels.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <vector>

#include "backend/vulkan/grouped_layout.h"
#include "backend/vulkan/pipelines.h"
#include "common/error.h"

namespace rwkv::vk {
namespace {

// Descriptor interfaces of the shaders (binding counts in binding order) and push sizes.
// Every matrix shader has the same push block (matrix_io.glsl); the tiled matmuls also
// bind their split-K scratch.
const ShaderInterface kMatrixIface{{4, 1, 1, 1, 1, 1}, 24};
const ShaderInterface kMatmulIface{{4, 1, 1, 1, 1, 1, 1}, 24};
const ShaderInterface kEmbedIface{{4, 1, 1, 1}, sizeof(EmbedPush)};
const ShaderInterface kLnMixIface{{1, 1, 1, 1, 1}, sizeof(LnMixPush)};
const ShaderInterface kWkvIface{{1, 1, 1, 1}, sizeof(WkvPush)};
const ShaderInterface kWkvLoraIface{{1, 1, 1, 1, 4}, sizeof(WkvLoraPush)};
const ShaderInterface kFfnSparseIface{{1, 1, 1}, sizeof(FfnSparsePush)};
const ShaderInterface kCopyIface{{1, 1}, 4};

uint32_t ceil_div(uint32_t a, uint32_t b) { return (a + b - 1) / b; }

// 16-byte quads per row of a folded WKV's up matrix (wkv_lora.glsl's Q_*).
uint32_t lora_row_quads(TensorType type, uint32_t rank) {
  if (type == TensorType::Q8_0) return q8_0_grouped_row_bytes(rank) / 16;
  return type == TensorType::F32 ? rank / 4 : rank / 8;
}

// The tiled matmul splits K so that a dispatch has about this many invocations (256
// workgroups of 256: about two per SM of an H100, the most that fit; the 8 x 8 outputs per
// invocation leave too few invocations for T = 256 and 2560 output rows), keeping at least
// kMinSplitK elements per split. On the H100 (2.9B F16 pp512) no split was 13% slower.
constexpr uint32_t kSplitTarget = 65536;
constexpr uint32_t kMinSplitK = 256;

// Shared-memory bytes of the tiled matmul with `threads` invocations: two K slices of 16
// for 128 rows and threads / 2 tokens.
uint32_t matmul_shared_bytes(uint32_t threads) { return 2 * 16 * (Kernels::matmul_rows + threads / 2) * 4; }
// Shared-memory bytes of the tensor-core matmul (matmul_cm.comp): two K slices of 32 for 128
// rows and 128 tokens as float16 rows padded to 40, and common.glsl's reduction array.
constexpr uint32_t kCoopmatSharedBytes = 2 * 2 * 128 * 40 * 2 + 64 * 8;

}  // namespace

uint32_t WkvScanShape::shared_bytes(uint32_t N) const {
  // Staged r, decay, k_mod, alpha, beta (padded rows of N + 4 lanes floats) and v', the parts
  // of y, and the parts of sa for two token parities (wkv_scan.comp).
  return 4 * (chunk * (5 * (N + 4 * lanes) + rows + rows * lanes) + 2 * rows * lanes);
}

uint32_t WkvLoraShape::quads() const {
  if (invocations == 0) return 0;
  uint32_t n = 0;
  for (size_t m = 0; m < 4; ++m) {
    const uint32_t rows_per_pass = invocations / lora_row_quads(types[m], ranks[m]);
    if (rows_per_pass == 0) return ~0u;  // a row wider than the workgroup
    n += ceil_div(head_size, rows_per_pass);
  }
  return n;
}

uint32_t WkvLoraShape::shared_bytes() const {
  uint32_t floats = 9 * head_size;  // lora_out [4 N], sh_r .. sh_b [5 N]
  for (size_t m = 0; m < 4; ++m) floats += head_size * (lora_row_quads(types[m], ranks[m]) | 1);
  return 4 * floats + 64 * 8;  // + red_sh
}

std::string shader_type_suffix(TensorType type) {
  std::string s(type_name(type));
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool shader_supports(TensorType type) {
  switch (type) {
    case TensorType::F32:
    case TensorType::F16:
    case TensorType::BF16:
    case TensorType::Q4_0:
    case TensorType::Q4_1:
    case TensorType::Q5_0:
    case TensorType::Q5_1:
    case TensorType::Q8_0:
    case TensorType::Q4_K:
    case TensorType::Q5_K:
    case TensorType::Q6_K:
      return true;
    default:
      return false;
  }
}

bool sparse_ffn_supported(TensorType type, uint32_t C) {
  if (type == TensorType::Q8_0) return C > 0 && C % 16 == 0;
  return (type == TensorType::F16 || type == TensorType::BF16) && C > 0 && C % 8 == 0;
}

SparseFfnShape sparse_ffn_shape(TensorType type, uint32_t C, uint32_t F, uint32_t lanes, uint32_t units) {
  SparseFfnShape s;
  if (type == TensorType::Q8_0) {
    // The shader's one split: 128-output slices, a 32-unit block per team of 16.
    if ((lanes != 0 && lanes != 16) || (units != 0 && units != 512)) {
      fail(ErrorCode::argument, "vulkan: the Q8_0 sparse FFN takes 16 lanes and 512 units, not " +
                                    std::to_string(lanes) + " and " + std::to_string(units));
    }
    s.per_lane = 8;
    s.lanes = 16;
    s.units = 512;
  } else {
    // Slices of 128 outputs (256-byte runs of each weight row) on wide models, of 64 on
    // narrow ones, where wide slices would leave too few workgroups.
    s.per_lane = 8;
    s.lanes = lanes != 0 ? lanes : C >= 2048 ? 16 : 8;
    if (s.lanes != 8 && s.lanes != 16 && s.lanes != 32) {
      fail(ErrorCode::argument, "vulkan: sparse FFN lanes " + std::to_string(s.lanes) + " is not 8, 16 or 32");
    }
    // The largest groups that still give about 256 workgroups (two per SM of an H100: enough
    // loads in flight to stream the weights), so that the last workgroup of a slice adds few
    // partial sums.
    if (units == 0) {
      units = 1024;
      while (units > 64 && uint64_t(ceil_div(C, 8 * s.lanes)) * ceil_div(F, units) < 256) units /= 2;
    }
    if (units < 64 || units > 1024 || (units & (units - 1)) != 0) {
      fail(ErrorCode::argument,
           "vulkan: sparse FFN units " + std::to_string(units) + " is not a power of two in [64, 1024]");
    }
    s.units = units;
  }
  s.slices = ceil_div(C, s.per_lane * s.lanes);
  s.groups = ceil_div(F, s.units);
  return s;
}

Kernels::Kernels(Context& ctx) : ctx_(ctx) {
  // Prefill takes the tensor-core matmul where the device has it, unless
  // RWKV_VULKAN_COOPMAT=0 (for comparisons with the float32 one).
  const char* cm = std::getenv("RWKV_VULKAN_COOPMAT");
  use_coopmat_ =
      ctx.info().coopmat && ctx.limits().max_shared_bytes >= kCoopmatSharedBytes && !(cm != nullptr && cm[0] == '0');
  if (ctx.info().type == "cpu") matvec_wg_ = 32;
}

uint32_t Kernels::max_job_rows() const {
  return std::min<uint64_t>(uint64_t(ctx_.limits().max_workgroup_count[0]) * matvec_rows, 1u << 20);
}

void memory_barrier(const Functions& fn, VkCommandBuffer cmd, VkPipelineStageFlags src_stage, VkAccessFlags src,
                    VkPipelineStageFlags dst_stage, VkAccessFlags dst) {
  VkMemoryBarrier mb{};
  mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  mb.srcAccessMask = src;
  mb.dstAccessMask = dst;
  fn.vkCmdPipelineBarrier(cmd, src_stage, dst_stage, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void Kernels::barrier(VkCommandBuffer cmd) const {
  memory_barrier(ctx_.fn(), cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                 VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

void Kernels::from_transfer(VkCommandBuffer cmd) const {
  memory_barrier(ctx_.fn(), cmd, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                 VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                 VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

void Kernels::to_transfer(VkCommandBuffer cmd) const {
  memory_barrier(ctx_.fn(), cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                 VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
}

void Kernels::host_barrier(VkCommandBuffer cmd) const {
  memory_barrier(ctx_.fn(), cmd, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                 VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                 VK_ACCESS_HOST_READ_BIT);
}

void Kernels::push(VkCommandBuffer cmd, const Pipeline& p, std::span<const std::pair<VkBuffer, uint32_t>> bindings,
                   const void* constants, uint32_t bytes) const {
  const Functions& fn = ctx_.fn();
  fn.vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
  std::vector<VkDescriptorBufferInfo> infos;
  infos.reserve(bindings.size());
  for (const auto& [buffer, binding] : bindings) infos.push_back({buffer, 0, VK_WHOLE_SIZE});
  std::vector<VkWriteDescriptorSet> writes;
  size_t i = 0;
  for (auto it = bindings.begin(); it != bindings.end();) {
    const uint32_t binding = it->second;
    uint32_t count = 0;
    const size_t first = i;
    while (it != bindings.end() && it->second == binding) {
      ++it;
      ++i;
      ++count;
    }
    VkWriteDescriptorSet w{};
    w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    w.dstBinding = binding;
    w.descriptorCount = count;
    w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    w.pBufferInfo = &infos[first];
    writes.push_back(w);
  }
  fn.vkCmdPushDescriptorSetKHR(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0, uint32_t(writes.size()),
                               writes.data());
  fn.vkCmdPushConstants(cmd, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, bytes, constants);
}

MatmulPlan Kernels::matmul_plan(const MatJobs& jobs, uint32_t n_tok, uint64_t max_count_words, uint64_t max_part_words,
                                MatPath path) const {
  MatmulPlan p;
  if (path == MatPath::automatic) path = use_coopmat_ ? MatPath::matmul_coopmat : MatPath::matmul;
  // Float32: 128-token tiles for long steps where they fit in the device's shared memory; 64
  // below (less padding) and on small devices. Tensor cores: always 128 (one shader shape).
  const bool wide =
      path == MatPath::matmul_coopmat || (n_tok > 64 && matmul_shared_bytes(256) <= ctx_.limits().max_shared_bytes);
  p.threads = wide ? 256 : 128;
  p.tokens = p.threads / 2;
  // Scratch: a counter per tile, 64 floats per invocation per split.
  const uint64_t tiles = uint64_t(jobs.row_tiles) * ceil_div(n_tok, p.tokens);
  const auto fits = [&](uint32_t splits) {
    return splits == 1 || (tiles <= max_count_words && tiles * splits * 64 * p.threads <= max_part_words);
  };
  if (jobs.splits != 0) {
    p.splits = jobs.splits;
    if (!fits(p.splits)) {
      fail(ErrorCode::argument,
           "vulkan: a matmul split " + std::to_string(p.splits) + " ways needs " + std::to_string(tiles) +
               " counters and " + std::to_string(tiles * p.splits * 64 * p.threads) + " words of partial sums; " +
               std::to_string(max_count_words) + " and " + std::to_string(max_part_words) + " are bound");
    }
  } else {
    // The whole number of splits that brings the grid nearest the target (any count: a
    // power of two would overshoot or undershoot one wave by up to a third).
    const uint64_t target = kSplitTarget / p.threads;
    const uint64_t by_k = std::max<uint32_t>(jobs.max_cols / kMinSplitK, 1);
    p.splits = uint32_t(std::clamp<uint64_t>((target + tiles / 2) / std::max<uint64_t>(tiles, 1), 1, by_k));
    while (!fits(p.splits)) --p.splits;
  }
  if (p.splits > 1) {
    p.count_words = uint32_t(tiles);
    p.part_words = tiles * p.splits * 64 * p.threads;
  }
  return p;
}

MatmulPlan Kernels::matrix(VkCommandBuffer cmd, TensorType type, const MatBindings& b, const MatJobs& jobs,
                           uint32_t n_tok, uint32_t gather_off, MatPath path, MatF16 f16) {
  if (jobs.n_jobs == 0 || n_tok == 0) return {};
  if (path == MatPath::automatic) {
    path = n_tok <= matvec_max_tokens ? MatPath::matvec : use_coopmat_ ? MatPath::matmul_coopmat : MatPath::matmul;
  }
  if ((f16.x || f16.y) && path != MatPath::matmul_coopmat)
    fail(ErrorCode::argument, "vulkan: float16 activations outside the tensor-core matmul");
  if (path == MatPath::matmul_coopmat &&
      (!ctx_.info().coopmat || ctx_.limits().max_shared_bytes < kCoopmatSharedBytes)) {
    fail(ErrorCode::unsupported, "vulkan: " + ctx_.info().name + " has no usable cooperative matrices");
  }
  if (b.part_off % 4 != 0) fail(ErrorCode::argument, "vulkan: matmul partial sums not 16-byte aligned");
  const std::string suffix = shader_type_suffix(type);
  MatmulPlan plan;
  if (path != MatPath::matvec) {
    const bool scratch = b.split_k != VK_NULL_HANDLE;
    plan = matmul_plan(jobs, n_tok, scratch ? b.count_words : 0, scratch ? b.part_words : 0, path);
  }
  // The push block of matrix_io.glsl (the partial sums' offset in vec4 units).
  const uint32_t push_data[6] = {jobs.job_base, n_tok, gather_off, plan.splits, b.count_off, b.part_off / 4};
  const auto bind = [&](const Pipeline& p, const ShaderInterface& iface) {
    // Binding 6 exists only in the tiled matmuls' interface; without scratch it binds y
    // (unused: no split).
    const std::pair<VkBuffer, uint32_t> all[] = {{b.weights[0], 0}, {b.weights[1], 0},
                                                 {b.weights[2], 0}, {b.weights[3], 0},
                                                 {b.vecs, 1},       {b.x, 2},
                                                 {b.y, 3},          {b.jobs, 4},
                                                 {b.meta, 5},       {b.split_k != VK_NULL_HANDLE ? b.split_k : b.y, 6}};
    push(cmd, p, std::span(all, iface.binding_counts.size() == 7 ? 10 : 9), push_data, sizeof(push_data));
  };
  if (path == MatPath::matvec) {
    // One token at a time for decode; four at a time for small batches.
    const uint32_t tok = n_tok == 1 ? 1 : 4;
    const uint32_t wg = jobs.max_cols <= 16 * short_wg ? std::min(short_wg, matvec_wg_) : matvec_wg_;
    const uint32_t spec[3] = {wg, matvec_rows, tok};
    bind(ctx_.pipelines().get("matvec_" + suffix, kMatrixIface, spec), kMatrixIface);
    ctx_.fn().vkCmdDispatch(cmd, ceil_div(jobs.max_rows, matvec_rows), jobs.n_jobs, 1);
  } else if (path == MatPath::matmul) {
    const uint32_t spec[1] = {plan.threads};
    bind(ctx_.pipelines().get("matmul_" + suffix, kMatmulIface, spec), kMatmulIface);
    ctx_.fn().vkCmdDispatch(cmd, ceil_div(jobs.max_rows, matmul_rows), ceil_div(n_tok, plan.tokens),
                            jobs.n_jobs * plan.splits);
  } else {
    // Token tiles along x: the workgroups that share a weight tile run together.
    // Three modules (matmul_cm.comp): float32 activations, float16 x, float16 x and y.
    if (f16.y && !f16.x) fail(ErrorCode::argument, "vulkan: a float16 matmul output needs a float16 input");
    const std::string form = f16.y ? "x16y16_" : f16.x ? "x16_" : "";
    const uint32_t y_scale[1] = {std::bit_cast<uint32_t>(f16.y_scale)};
    bind(ctx_.pipelines().get("matmul_cm_" + form + suffix, kMatmulIface,
                              f16.y ? std::span<const uint32_t>(y_scale) : std::span<const uint32_t>()),
         kMatmulIface);
    ctx_.fn().vkCmdDispatch(cmd, ceil_div(n_tok, plan.tokens), ceil_div(jobs.max_rows, matmul_rows),
                            jobs.n_jobs * plan.splits);
  }
  return plan;
}

void Kernels::embed(VkCommandBuffer cmd, TensorType type, VkBuffer weights, VkBuffer vecs, VkBuffer scratch,
                    VkBuffer meta, const EmbedPush& p, uint32_t n_rows) {
  const Pipeline& pl = ctx_.pipelines().get("embed_" + shader_type_suffix(type), kEmbedIface, {});
  push(cmd, pl, {{weights, 0}, {weights, 0}, {weights, 0}, {weights, 0}, {vecs, 1}, {scratch, 2}, {meta, 3}}, &p,
       sizeof(p));
  ctx_.fn().vkCmdDispatch(cmd, n_rows, 1, 1);
}

void Kernels::copy(VkCommandBuffer cmd, VkBuffer src, VkBuffer dst, uint32_t n_words, uint32_t workgroups) const {
  const Pipeline& pl = ctx_.pipelines().get("copy", kCopyIface, {});
  push(cmd, pl, {{src, 0}, {dst, 1}}, &n_words, sizeof(n_words));
  ctx_.fn().vkCmdDispatch(cmd, workgroups, 1, 1);
}

void Kernels::ln_mix(VkCommandBuffer cmd, VkBuffer scratch, VkBuffer vecs, VkBuffer state_in, VkBuffer state_commit,
                     VkBuffer meta, const LnMixPush& p, uint32_t n_rows, bool mix16) {
  if (p.nmix > 6) fail(ErrorCode::argument, "vulkan: ln_mix takes at most 6 mixes");
  if (mix16 && (p.C % 8 != 0 || p.mix % 4 != 0 || p.mix_stride % 4 != 0))
    fail(ErrorCode::argument, "vulkan: float16 mixes need C % 8 == 0 and 16-byte aligned regions");
  // Spec constants: the row's elements per invocation kept in registers (at most 16), mix16,
  // and one workgroup per row where there are rows enough to fill a large GPU.
  const bool row = n_rows >= ln_mix_row_min_rows && p.C <= 16 * 256;
  const uint32_t spec[3] = {std::clamp(ceil_div(p.C, 256), 1u, 16u), mix16 ? 1u : 0u, row ? 1u : 0u};
  const Pipeline& pl = ctx_.pipelines().get("ln_mix", kLnMixIface, spec);
  push(cmd, pl, {{scratch, 0}, {vecs, 1}, {state_in, 2}, {state_commit, 3}, {meta, 4}}, &p, sizeof(p));
  ctx_.fn().vkCmdDispatch(cmd, row ? 1 : ceil_div(p.C, 256), n_rows, 1);
}

void Kernels::wkv(VkCommandBuffer cmd, VkBuffer scratch, VkBuffer vecs, VkBuffer state, VkBuffer meta, const WkvPush& p,
                  uint32_t n_head, uint32_t n_seq, uint32_t head_size) {
  const uint32_t spec[1] = {head_size};
  const Pipeline& pl = ctx_.pipelines().get("wkv", kWkvIface, spec);
  push(cmd, pl, {{scratch, 0}, {vecs, 1}, {state, 2}, {meta, 3}}, &p, sizeof(p));
  ctx_.fn().vkCmdDispatch(cmd, n_head, n_seq, 1);
}

std::string Kernels::wkv_lora_unfit(const WkvLoraShape& s) const {
  const char* names[4] = {"W2", "A2", "G2", "V2"};
  for (size_t m = 0; m < 4; ++m) {
    const TensorType t = s.types[m];
    if (t != TensorType::F32 && t != TensorType::F16 && t != TensorType::BF16 && t != TensorType::Q8_0)
      return std::string(names[m]) + " has type " + std::string(type_name(t)) + " (not F32, F16, BF16 or Q8_0)";
    const uint32_t multiple = t == TensorType::Q8_0 ? 32 : 8;
    if (s.ranks[m] == 0 || s.ranks[m] % multiple != 0) {
      return std::string(names[m]) + " has rank " + std::to_string(s.ranks[m]) + " (not a multiple of " +
             std::to_string(multiple) + ")";
    }
  }
  if (s.head_size == 0 || s.invocations < s.head_size || s.invocations > 256 ||
      s.invocations > ctx_.limits().max_workgroup_size_x) {
    return std::to_string(s.invocations) + " invocations for head size " + std::to_string(s.head_size) +
           " (from the head size to 256)";
  }
  if (s.quads() == ~0u) return "a row of more 16-byte quads than " + std::to_string(s.invocations) + " invocations";
  if (s.quads() > wkv_lora_max_quads)
    return std::to_string(s.quads()) + " weight quads per invocation (at most " + std::to_string(wkv_lora_max_quads) +
           ")";
  if (s.shared_bytes() > ctx_.limits().max_shared_bytes)
    return std::to_string(s.shared_bytes()) + " bytes of shared memory (the device has " +
           std::to_string(ctx_.limits().max_shared_bytes) + ")";
  return {};
}

void Kernels::wkv_lora(VkCommandBuffer cmd, VkBuffer scratch, VkBuffer vecs, VkBuffer state, VkBuffer meta,
                       const std::array<VkBuffer, 4>& weights, const WkvLoraPush& p, const WkvLoraShape& shape,
                       uint32_t n_head, uint32_t n_seq) {
  const std::string unfit = wkv_lora_unfit(shape);
  if (!unfit.empty()) fail(ErrorCode::argument, "vulkan: no folded LoRA WKV with " + unfit);
  const uint32_t spec[10] = {shape.head_size,          shape.invocations,
                             uint32_t(shape.types[0]), uint32_t(shape.types[1]),
                             uint32_t(shape.types[2]), uint32_t(shape.types[3]),
                             shape.ranks[0],           shape.ranks[1],
                             shape.ranks[2],           shape.ranks[3]};
  const Pipeline& pl = ctx_.pipelines().get("wkv_lora", kWkvLoraIface, spec);
  push(cmd, pl,
       {{scratch, 0},
        {vecs, 1},
        {state, 2},
        {meta, 3},
        {weights[0], 4},
        {weights[1], 4},
        {weights[2], 4},
        {weights[3], 4}},
       &p, sizeof(p));
  ctx_.fn().vkCmdDispatch(cmd, n_head, n_seq, 1);
}

WkvScanShape Kernels::wkv_scan_shape(uint32_t N, uint32_t n_head, uint32_t n_seq, WkvScanShape want) const {
  WkvScanShape s = want;
  const auto fits_lanes = [&](uint32_t lanes) { return N % (4 * lanes) == 0 && lanes <= ctx_.limits().subgroup_size; };
  if (s.lanes == 0) {
    s.lanes = fits_lanes(8) ? 8 : fits_lanes(4) ? 4 : 2;
  }
  if (s.rows == 0) {
    // 32 rows per workgroup; 16 where that would leave most SMs of a large GPU idle (one
    // sequence of a model with 40 heads: 80 workgroups), as the CUDA backend's scan.
    s.rows = n_head * n_seq * (N / 32) < 100 ? 16 : 32;
    while (s.rows > 8 && N % s.rows != 0) s.rows /= 2;
  }
  if (s.chunk == 0) {
    s.chunk = 16;
    while (s.chunk > 1 && s.shared_bytes(N) > ctx_.limits().max_shared_bytes) s.chunk /= 2;
  }
  const bool ok = (s.lanes == 2 || s.lanes == 4 || s.lanes == 8) && fits_lanes(s.lanes) &&
                  (s.rows == 8 || s.rows == 16 || s.rows == 32 || s.rows == 64) && N % s.rows == 0 &&
                  s.rows * s.lanes <= ctx_.limits().max_workgroup_size_x && s.chunk >= 1 && s.chunk <= 16 &&
                  s.shared_bytes(N) <= ctx_.limits().max_shared_bytes;
  if (!ok) {
    fail(ErrorCode::argument, "vulkan: no WKV scan with " + std::to_string(s.rows) + " rows of " +
                                  std::to_string(s.lanes) + " lanes, " + std::to_string(s.chunk) +
                                  "-token chunks for head size " + std::to_string(N) + " on " + ctx_.info().name);
  }
  return s;
}

void Kernels::wkv_prefill(VkCommandBuffer cmd, VkBuffer scratch, VkBuffer vecs, VkBuffer state, VkBuffer meta,
                          const WkvPush& p, uint32_t n_head, uint32_t n_seq, uint32_t n_rows, uint32_t head_size,
                          WkvScanShape shape, bool out16) {
  if (p.dbg == kNone) fail(ErrorCode::argument, "vulkan: the prefill WKV needs the debug regions");
  if (out16 && (p.C % 8 != 0 || p.out % 4 != 0))
    fail(ErrorCode::argument, "vulkan: a float16 WKV output needs C % 8 == 0 and a 16-byte aligned region");
  const WkvScanShape s = wkv_scan_shape(head_size, n_head, n_seq, shape);
  const uint32_t per_token[1] = {head_size};
  const uint32_t post[2] = {head_size, out16 ? 1u : 0u};
  const uint32_t scan[4] = {s.rows * s.lanes, head_size, s.lanes, s.chunk};
  const auto dispatch = [&](const char* name, std::span<const uint32_t> spec, uint32_t x, uint32_t y) {
    push(cmd, ctx_.pipelines().get(name, kWkvIface, spec), {{scratch, 0}, {vecs, 1}, {state, 2}, {meta, 3}}, &p,
         sizeof(p));
    ctx_.fn().vkCmdDispatch(cmd, x, y, 1);
  };
  dispatch("wkv_prep", per_token, n_head, n_rows);
  barrier(cmd);
  dispatch("wkv_scan", scan, n_head * (head_size / s.rows), n_seq);
  barrier(cmd);
  dispatch("wkv_post", post, n_head, n_rows);
}

void Kernels::ffn_sparse(VkCommandBuffer cmd, TensorType type, VkBuffer weights, VkBuffer act, VkBuffer partials,
                         FfnSparsePush p, const SparseFfnShape& shape) {
  if (!sparse_ffn_supported(type, p.C) || shape.per_lane != 8u) {
    fail(ErrorCode::argument, "vulkan: no sparse FFN value product for " + std::string(type_name(type)) +
                                  " weights with C = " + std::to_string(p.C) + " and " +
                                  std::to_string(shape.per_lane) + " outputs per lane");
  }
  // Q8_0: the scale plane follows the F x C int8 quants (16-byte aligned: C % 16 == 0).
  p.s_off = type == TensorType::Q8_0 ? uint32_t(p.w_off + uint64_t(p.F) * p.C / 16) : 0;
  p.part_off = shape.part_off();
  const uint32_t spec[2] = {shape.lanes, shape.units};
  const Pipeline& pl = ctx_.pipelines().get("ffn_sparse_" + shader_type_suffix(type), kFfnSparseIface, spec);
  push(cmd, pl, {{weights, 0}, {act, 1}, {partials, 2}}, &p, sizeof(p));
  ctx_.fn().vkCmdDispatch(cmd, shape.slices, shape.groups, 1);
}

}  // namespace rwkv::vk
