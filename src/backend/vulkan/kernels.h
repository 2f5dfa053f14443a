// Recording of the backend's compute kernels into a command buffer. Each function binds one
// pipeline, pushes its descriptors and constants, and dispatches; callers place barriers.
// The parameter structs are the shaders' push-constant blocks, field for field.
// Activation offsets are in floats of the bound buffer; weight offsets in bytes.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <utility>

#include "backend/vulkan/context.h"
#include "backend/vulkan/pipelines.h"
#include "tensor/types.h"

namespace rwkv::vk {

constexpr uint32_t kNone = 0xFFFFFFFFu;  // an absent optional region (NONE in the shaders)

// Matrix-product epilogues (ACT_* in common.glsl).
enum Act : uint32_t { kActNone = 0, kActTanh = 1, kActSigmoid = 2, kActReluSq = 3, kActDecay = 4 };
constexpr uint32_t kJobGather = 0x100;  // x row t is meta[gather_off + t] (JOB_GATHER)

// One matrix job: struct Job in shaders/matrix_io.glsl.
struct MatJob {
  uint32_t wbind = 0, w_off = 0, row_bytes = 0, rows = 0, cols = 0;
  uint32_t x_off = 0, x_stride = 0, y_off = 0, y_stride = 0;
  uint32_t flags = 0, bias_off = kNone, type = 0;  // type: GGUF id of W (the host groups jobs by it)
  float x_scale = 1.0f;                            // x is scaled by this in the tensor-core path
  uint32_t tile_base = 0;  // the tiled matmul: the job's first row tile among its dispatch's jobs
  uint32_t y_base = 0;     // y_off of the job's whole matrix (a piece's y_off adds its first row)
  uint32_t pad2 = 0;
};
static_assert(sizeof(MatJob) == 64);

// The jobs of one matrix dispatch: jobs[job_base, job_base + n_jobs) of the bound table.
struct MatJobs {
  uint32_t job_base = 0, n_jobs = 0;
  uint32_t max_rows = 0, max_cols = 0;  // the largest rows, cols among them
  // Sum over the jobs of ceil(rows / Kernels::matmul_rows); each job's tile_base is the sum
  // over the jobs before it.
  uint32_t row_tiles = 0;
  uint32_t splits = 0;  // K splits of the tiled matmul; 0: matmul_plan's choice (tests force others)
};

// Float16 activations of a tensor-core matmul (matmul_cm.comp's X16, Y16): x read as float16
// (written so by its producer, already times each job's x_scale), y written as float16 times
// y_scale (the consumer's x_scale).
struct MatF16 {
  bool x = false, y = false;
  float y_scale = 1.0f;
};

// How a tiled matmul (float32 or tensor-core) runs a dispatch (Kernels::matmul_plan).
struct MatmulPlan {
  // Invocations per workgroup: 256 (tiles of 128 rows x 128 tokens) or, float32 only, 128 (x 64).
  uint32_t threads = 0;
  uint32_t tokens = 0;  // tokens per tile
  uint32_t splits = 1;  // K splits: each tile's K range is shared by this many workgroups
  // Split-K scratch words (0 without a split): a counter per tile, the partial sums (a
  // multiple of 4).
  uint32_t count_words = 0;
  uint64_t part_words = 0;
};

// The prefill WKV scan's work split (wkv_scan.comp).
struct WkvScanShape {
  uint32_t rows = 0;   // value rows per workgroup: 8, 16, 32 or 64, dividing the head size
  uint32_t lanes = 0;  // invocations per row: 2, 4 or 8, head size % (4 lanes) == 0
  uint32_t chunk = 0;  // tokens staged in shared memory at a time: 1 .. 16
  uint32_t shared_bytes(uint32_t head_size) const;
};

struct EmbedPush {
  uint32_t w_off, row_bytes, piece_start, piece_rows, C, emb_off, h_off, ln_w, ln_b;
  float eps;
  uint32_t tok_off;
};
struct LnMixPush {
  uint32_t C, h_in, delta, h_out, xln, mix, mix_stride, nmix, mu, ln_w, ln_b;
  float eps;
  uint32_t slot_stride, shift_off, commit_src, commit_off, row_slot, row_flags;
};
struct WkvPush {
  uint32_t C, r, k, v, a, decay, g, nu, v_first, xa, out, dbg, dbg_stride, k_k, k_a, r_k, lnx_w, lnx_b;
  float gn_eps;
  uint32_t slot_stride, seq_start, seq_rows, seq_slot;
};
// The fused WKV with the LoRA up-projections folded in (wkv.comp built with LORA): wkv's
// constants, with a, decay, g, nu naming the down projections' outputs a_mid [T x Da],
// w_mid [T x Dw], g_mid [T x Dg] and v_mid [T x Dv] (kNone on layer 0), then the up
// matrices W2, A2, G2, V2 [C x D] (byte offsets in weight bindings 0..3, 16-byte aligned)
// and the biases w0, a0, v0 [C] in vecs (v0: layers > 0).
struct WkvLoraPush {
  WkvPush wkv;
  uint32_t w2_off, a2_off, g2_off, v2_off;
  uint32_t w0, a0, v0;
};
static_assert(sizeof(WkvPush) <= 128 && sizeof(WkvLoraPush) <= 128 && sizeof(LnMixPush) <= 128 &&
              sizeof(EmbedPush) <= 128);

// The folded WKV's specialisation (shaders/wkv_lora.glsl): invocations per workgroup, and
// types (F32, F16, BF16, Q8_0) and ranks (columns, multiples of 8; Q8_0: of 32) of W2, A2, G2,
// V2.
struct WkvLoraShape {
  uint32_t head_size = 0;
  uint32_t invocations = 0;  // >= head_size; 0: none (the layer keeps the matrix stage)
  std::array<TensorType, 4> types{};
  std::array<uint32_t, 4> ranks{};
  // 16-byte weight quads each invocation holds in registers: per matrix, head_size rows of Q
  // quads (as stored on the device: Q8_0 grouped) in passes of invocations / Q rows. ~0u
  // where a row has more quads than the workgroup has invocations.
  uint32_t quads() const;
  // The shader's shared memory: a partial sum per quad (rows padded to an odd count), the
  // four outputs, the recurrence's five arrays and common.glsl's reduction array.
  uint32_t shared_bytes() const;
};

// The sparse FFN value product's push constants (ffn_sparse.comp).
struct FfnSparsePush {
  uint32_t w_off;         // the transposed value matrix's first element, in 16-byte units of its buffer
  uint32_t s_off;         // set by Kernels::ffn_sparse: Q8_0's scale plane, after the F x C quants
  uint32_t C, F;          // outputs, hidden units
  uint32_t h_off, y_off;  // h [F] and y [C] in the activations (floats)
  uint32_t part_off;      // set by Kernels::ffn_sparse: SparseFfnShape::part_off()
};

// Work split of the sparse FFN value product (ffn_sparse.comp): workgroups of 256
// invocations, each for a slice of per_lane x lanes outputs and a group of `units` hidden
// units. F16, BF16: 8 outputs per lane, lanes 8, 16 or 32, units a power of two, 64 .. 1024.
// Q8_0: 8 outputs per lane, 16 lanes (a team per hidden block of 32), 512 units.
struct SparseFfnShape {
  uint32_t per_lane = 0, lanes = 0, units = 0;
  uint32_t slices = 0, groups = 0;  // the grid: ceil(C / (per_lane lanes)) x ceil(F / units)
  // The partials buffer: `slices` counters (zero before the first dispatch; each dispatch
  // leaves them zero), then [groups x C] partial sums from part_off (uint32 words).
  uint32_t part_off() const { return (slices + 3) / 4 * 4; }
  uint64_t partial_words(uint32_t C) const { return part_off() + uint64_t(groups) * C; }
};
// The split for a value matrix of `type` with C outputs and F hidden units; lanes, units = 0:
// the backend's choice, else those (tests use them to cover every variant). Throws
// Error(argument) for a split the shader lacks.
SparseFfnShape sparse_ffn_shape(TensorType type, uint32_t C, uint32_t F, uint32_t lanes = 0, uint32_t units = 0);
// Whether the sparse product handles a value matrix of this type with C outputs: F16 and
// BF16 with C % 8 == 0, Q8_0 with C % 16 == 0 (16 int8 quants per 16-byte load).
bool sparse_ffn_supported(TensorType type, uint32_t C);

// Which matrix-product shader runs a group of jobs. automatic: matvec for few tokens, else
// the tensor-core matmul where the device has it (RWKV_VULKAN_COOPMAT=0: not), else the
// float32 tiled one.
enum class MatPath { automatic, matvec, matmul, matmul_coopmat };

// The buffers a matrix dispatch reads and writes. Weight slots that no job uses may repeat
// another buffer (every slot must be bound).
struct MatBindings {
  std::array<VkBuffer, 4> weights{};
  VkBuffer vecs = VK_NULL_HANDLE, x = VK_NULL_HANDLE, y = VK_NULL_HANDLE;
  VkBuffer jobs = VK_NULL_HANDLE, meta = VK_NULL_HANDLE;
  // The tiled matmul's split-K scratch, two ranges of words of `split_k`: tile counters,
  // which must be zero when first used and hold nothing else (each dispatch leaves its
  // counters at zero, and the next counts on it), and partial sums. Dispatches that may run
  // concurrently need disjoint ranges. Null: the matmul does not split K.
  VkBuffer split_k = VK_NULL_HANDLE;
  uint32_t count_off = 0, count_words = 0;
  uint32_t part_off = 0;  // a multiple of 4
  uint64_t part_words = 0;
};

class Kernels {
 public:
  explicit Kernels(Context& ctx);

  // Compute to compute: earlier shader writes visible to later shaders. The barrier placed
  // between dependent dispatches; it names no transfer stage, which would cost more.
  void barrier(VkCommandBuffer cmd) const;
  // Earlier transfer and shader writes, of this or of earlier submissions (uploads, fills,
  // the previous step), visible to later shaders: the first barrier of a step.
  void from_transfer(VkCommandBuffer cmd) const;
  // Earlier shader writes visible to later transfers (copies out).
  void to_transfer(VkCommandBuffer cmd) const;
  // Earlier transfer and shader writes visible to the host (before a fence wait and a readback).
  void host_barrier(VkCommandBuffer cmd) const;

  // `jobs`, all of weight `type`, over n_tok activation rows. automatic: matvec for n_tok <=
  // matvec_max_tokens. Returns a tiled matmul's plan (its split-K scratch words are used
  // from b.count_off and b.part_off); a default plan for the matvec. f16: only where the
  // dispatch takes the tensor-core matmul.
  MatmulPlan matrix(VkCommandBuffer cmd, TensorType type, const MatBindings& b, const MatJobs& jobs, uint32_t n_tok,
                    uint32_t gather_off, MatPath path = MatPath::automatic, MatF16 f16 = {});
  // The tiles and K split of tiled-matmul `path` (matmul or matmul_coopmat; automatic: the
  // one prefill takes) for `jobs` over n_tok rows, with at most max_count_words of counters
  // and max_part_words of partial sums. The split makes grids that would leave most of a
  // large GPU idle (T = 256 against 2560 output rows: 40 tiles) about one wave of workgroups.
  MatmulPlan matmul_plan(const MatJobs& jobs, uint32_t n_tok, uint64_t max_count_words, uint64_t max_part_words,
                         MatPath path = MatPath::automatic) const;
  // Whether prefill takes the tensor-core matmul (MatPath::automatic above matvec sizes).
  bool uses_coopmat() const { return use_coopmat_; }
  // Whether a step of n_tok rows takes it (MatPath::automatic).
  bool coopmat_for(uint32_t n_tok) const { return use_coopmat_ && n_tok > matvec_max_tokens; }
  static constexpr uint32_t matmul_rows = 128;  // output rows per matmul tile (both tiled paths)
  // dst = src, n_words 16-byte words (copy.comp), over `workgroups` workgroups of 256.
  void copy(VkCommandBuffer cmd, VkBuffer src, VkBuffer dst, uint32_t n_words, uint32_t workgroups) const;
  // Embedding rows + ln0 for n_rows token rows (weights: the table piece; 1 binding).
  void embed(VkCommandBuffer cmd, TensorType type, VkBuffer weights, VkBuffer vecs, VkBuffer scratch, VkBuffer meta,
             const EmbedPush& p, uint32_t n_rows);
  // Residual add + LayerNorm + shift lerps of n_rows rows (ln_mix.comp; p.nmix <= 6), as
  // ceil(C / 256) x n_rows workgroups, or from ln_mix_row_min_rows rows (C <= 4096) one
  // workgroup per row. mix16: the mixes written as float16 (MatF16::x).
  void ln_mix(VkCommandBuffer cmd, VkBuffer scratch, VkBuffer vecs, VkBuffer state_in, VkBuffer state_commit,
              VkBuffer meta, const LnMixPush& p, uint32_t n_rows, bool mix16 = false);
  // The WKV time-mix core, fused (wkv.comp): one workgroup per (head, sequence) runs the
  // sequence's tokens in order, everything per token inside. For decode and short sequences.
  void wkv(VkCommandBuffer cmd, VkBuffer scratch, VkBuffer vecs, VkBuffer state, VkBuffer meta, const WkvPush& p,
           uint32_t n_head, uint32_t n_seq, uint32_t head_size);
  // The same with the LoRA up-projections folded in (WkvLoraPush): each workgroup first
  // computes decay, a, g and nu of its head, per token, from the down projections' outputs
  // and rows of the up matrices, held in `weights` (bindings of W2, A2, G2, V2).
  void wkv_lora(VkCommandBuffer cmd, VkBuffer scratch, VkBuffer vecs, VkBuffer state, VkBuffer meta,
                const std::array<VkBuffer, 4>& weights, const WkvLoraPush& p, const WkvLoraShape& shape,
                uint32_t n_head, uint32_t n_seq);
  // Why `shape` cannot run on this device (types, ranks, invocations, registers, shared
  // memory); empty when it can.
  std::string wkv_lora_unfit(const WkvLoraShape& shape) const;
  // The invocations a folded WKV takes by default: four per channel of the head (each holds
  // a quarter of the head's weight quads), at most 256 (common.glsl's reductions).
  static uint32_t wkv_lora_invocations(uint32_t head_size) { return std::min(4 * head_size, 256u); }
  // Quads one invocation may hold (4 registers each; the recurrence holds head_size more).
  static constexpr uint32_t wkv_lora_max_quads = 32;
  // The backend folds the LoRA up-projections into the WKV only in steps whose sequences
  // have at most this many rows: each workgroup computes them token after token, where the
  // matrix stage spreads every token over the GPU. On the H100 (0.1B and 2.9B Q8_0, one
  // sequence of p rows) the fold gained 4% at p = 2, nothing at 4 and lost up to 7% at 8.
  static constexpr uint32_t wkv_lora_max_rows = 4;
  // The same for prefill, as three dispatches with barriers between: wkv_prep and wkv_post
  // over (head, row) for the per-token work, wkv_scan for the recurrence alone with each
  // head's rows split over workgroups. p.dbg must name the five debug regions (they carry
  // the intermediates). n_rows: the step's rows. shape: zeros are the backend's choice.
  // out16: p.out written as float16 (MatF16::x).
  void wkv_prefill(VkCommandBuffer cmd, VkBuffer scratch, VkBuffer vecs, VkBuffer state, VkBuffer meta,
                   const WkvPush& p, uint32_t n_head, uint32_t n_seq, uint32_t n_rows, uint32_t head_size,
                   WkvScanShape shape = {}, bool out16 = false);
  // The scan's work split for this head size and grid, zeros in `want` filled in; throws
  // Error(argument) for a split the shader or the device cannot run.
  WkvScanShape wkv_scan_shape(uint32_t head_size, uint32_t n_head, uint32_t n_seq, WkvScanShape want = {}) const;
  // The backend takes wkv_prefill for a step where some sequence has at least this many
  // tokens: the fused form waits on three workgroup reductions per token, the prefill form
  // on none but costs two more dispatches and barriers (an estimate of the break-even
  // point, not a measurement).
  static constexpr uint32_t wkv_scan_min_tokens = 16;
  // y = W h for one row, skipping the hidden units where h is exactly zero (ffn_sparse.comp):
  // `weights` holds W transposed (type F16, BF16 or Q8_0: WeightStore::add_transposed) from
  // p.w_off, `act` h and y, `partials` the shape's counters and partial sums
  // (partial_words(C) words).
  void ffn_sparse(VkCommandBuffer cmd, TensorType type, VkBuffer weights, VkBuffer act, VkBuffer partials,
                  FfnSparsePush p, const SparseFfnShape& shape);

  static constexpr uint32_t matvec_max_tokens = 16;
  // Rows from which ln_mix takes a workgroup per row (about a wave of a large GPU's SMs).
  static constexpr uint32_t ln_mix_row_min_rows = 128;
  // Rows per workgroup of the matvec shader (each x load serves both; 4 measured slower at
  // 2.9B decode, bench/RESULTS-vulkan.md): the most rows one job may have is this times the
  // device's workgroup-count limit (jobs are split to respect it).
  static constexpr uint32_t matvec_rows = 2;
  // Products whose rows have at most 16 x short_wg elements (the LoRA up projections: rank
  // columns) run with workgroups of short_wg invocations: in a wider one most invocations
  // would have no 16-element unit to read, and the idle ones limit the workgroups per SM.
  static constexpr uint32_t short_wg = 32;
  uint32_t max_job_rows() const;

 private:
  // Binds `p` and pushes its descriptors, (buffer, binding) pairs in binding order
  // (consecutive pairs with the same binding fill its array elements), and constants.
  void push(VkCommandBuffer cmd, const Pipeline& p, std::span<const std::pair<VkBuffer, uint32_t>> bindings,
            const void* constants, uint32_t bytes) const;
  void push(VkCommandBuffer cmd, const Pipeline& p, std::initializer_list<std::pair<VkBuffer, uint32_t>> bindings,
            const void* constants, uint32_t bytes) const {
    push(cmd, p, std::span(bindings.begin(), bindings.size()), constants, bytes);
  }
  Context& ctx_;
  // Matvec workgroup: a couple of rows, several subgroups wide on GPUs, where many small
  // workgroups keep enough loads in flight to stream the weights at full bandwidth; one
  // SIMD-width group or so on CPU-type devices, where each barrier costs a context switch.
  uint32_t matvec_wg_ = 128;
  bool use_coopmat_ = false;
};

// One global memory barrier: writes `src` of `src_stage` made available and visible to `dst`
// of `dst_stage`.
void memory_barrier(const Functions& fn, VkCommandBuffer cmd, VkPipelineStageFlags src_stage, VkAccessFlags src,
                    VkPipelineStageFlags dst_stage, VkAccessFlags dst);

// "q4_K" -> "q4_k": the shader-variant suffix of a weight type.
std::string shader_type_suffix(TensorType type);
// True for the weight types the shaders read (every model type of types.cpp).
bool shader_supports(TensorType type);

}  // namespace rwkv::vk
