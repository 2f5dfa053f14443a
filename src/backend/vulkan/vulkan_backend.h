// The Vulkan backend (internal). A step runs every layer for a batch of sequences in one
// command buffer: about ten dispatches per layer separated by barriers, recorded once per
// batch shape (rows, sequences, logits rows) and replayed; what changes from step to step
// (token ids, slots, row layout) lives in a small host-visible "meta" buffer.
//
// Per layer (T = rows of the step, sequence-major):
//   ln_mix(att)  h += ffn_out(l-1); xa = LN1(h); the six lerps with the token shift
//   matrices     r, k, v = W x; LoRA down projections (tanh / sigmoid epilogues)
//   matrices     LoRA up projections: decay, a, nu (value residual), g (mat.lora; in
//                decode and other steps of short sequences, WkvForm::folded, the wkv
//                dispatch computes them instead where the layer allows: LoraFold)
//   wkv          removal key, k_mod, value residual, recurrence, ln_x, bonus, gate (fused in
//                one dispatch; when a sequence of the step is long, three: per-token work,
//                the recurrence alone, per-token work)
//   matrices     att_out = W_o y
//   ln_mix(ffn)  h += att_out; xf = LN2(h); xk lerp with the token shift
//   matrices     hidden = relu(W_key xk)^2;  ffn_out = W_value hidden (one-row steps: the
//                sparse product over W_value's transposed copy, where the layer has one)
// then LN_out over h + ffn_out and the head for the rows that want logits.
// Shift states are committed by a later dispatch than the one that reads them (wkv for the
// attention shift, the next ln_mix for the FFN shift), so no dispatch reads a value that
// another workgroup of the same dispatch overwrites.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/vulkan/context.h"
#include "backend/vulkan/kernels.h"
#include "backend/vulkan/profile.h"
#include "backend/vulkan/weights.h"

namespace rwkv::vk {

// Offsets (floats) of the activation regions in the scratch buffer; region X holds up to
// rows_cap rows of its width. mix holds six [rows_cap x C] slots (xr, xw, xk, xv, xa, xg),
// dbg five (kk, k_mod, v, wkv, lnx: written only while a debug hook is set).
struct ScratchLayout {
  uint32_t rows_cap = 0;
  uint32_t h_a = 0, h_b = 0, att_out = 0, ffn_out = 0, xa = 0, mix = 0;
  uint32_t r = 0, k = 0, v = 0, decay = 0, a = 0, nu = 0, g = 0;
  uint32_t w_mid = 0, a_mid = 0, v_mid = 0, g_mid = 0;
  uint32_t v_first = 0, att_y = 0, xf = 0, xk = 0, hidden = 0, emb = 0, head_in = 0, dbg = 0, layer_out = 0;
  uint64_t floats = 0;
};

// Jobs of one weight type run by one dispatch (jobs table entries [job_base, +n_jobs)).
struct MatGroup {
  MatJobs jobs;
  TensorType type = TensorType::F32;
  std::array<VkBuffer, 4> weights{};
};
// Matrix products with no dependencies among them: one dispatch per weight type (and per
// four weight buffers), dispatched back to back, no barriers. (One mixed-type dispatch per
// stage measured 4-6% slower at 2.9B decode: bench/RESULTS-vulkan.md.)
struct MatStage {
  std::vector<MatGroup> groups;
  // Whether its jobs can take float16 activations (kernels.h MatF16): x rows 16-byte aligned
  // (x_off % 4 == 0, x_stride % 8 == 0); y rows in whole 32-bit pairs (y_stride and every
  // piece's first row, y_off - y_base, even).
  bool x16_ok = false, y16_ok = false;
};

// A layer's LoRA up-projections folded into its WKV dispatch (Kernels::wkv_lora): each up
// matrix (W2, A2, G2, V2; layer 0, which has no V2, names A2 in its place) whole in one
// weight buffer, at a byte offset. Planned at load where the types and shapes allow
// (Kernels::wkv_lora_unfit) and RWKV_VULKAN_LORA_FOLD is not 0.
struct LoraFold {
  WkvLoraShape shape;  // shape.invocations == 0: the layer keeps the mat.lora stage
  std::array<VkBuffer, 4> weights{};
  std::array<uint32_t, 4> offsets{};
  uint32_t w0 = 0, a0 = 0, v0 = kNone;  // biases in the vectors buffer (v0: layers > 0)
};

struct LayerPlan {
  uint32_t ln1_w = 0, ln1_b = 0, ln2_w = 0, ln2_b = 0, mu6 = 0, ffn_mu = 0;
  uint32_t k_k = 0, k_a = 0, r_k = 0, lnx_w = 0, lnx_b = 0;
  MatStage in, lora, out, key, value;
  float value_x_scale = 1.0f;  // the value product's x_scale (MatJob), which the key's float16 output takes
  LoraFold fold;
  // W_value transposed [F x C] for one-row steps (ffn_sparse.comp); no pieces: none kept.
  DeviceMatrix value_t;
  SparseFfnShape sparse;  // its work split (one per type: F16 and BF16 share one, Q8_0 has its own)
};

// How a sub-step runs the WKV, from the most rows one of its sequences has: the prefill form
// (scan: some sequence has Kernels::wkv_scan_min_tokens or more), or the fused kernel after
// the LoRA up-projections' matrix stage (fused), or, in steps of matvec size whose sequences
// have at most Kernels::wkv_lora_max_rows rows, with them folded in where the layer allows
// (folded).
enum class WkvForm { fused, scan, folded };

// One sequence's share of a sub-step.
struct StepPart {
  int slot = 0;
  const int32_t* tokens = nullptr;
  int n = 0;
  bool all_logits = false;
  bool ends = false;  // the sequence's last token is in this part
};

class VulkanBackend final : public Backend {
 public:
  VulkanBackend(const BackendOptions& options, bool allow_cpu_devices);
  ~VulkanBackend() override;

  std::string name() const override { return "vulkan"; }
  std::string device_name() const override { return ctx_->info().name; }
  void load(std::shared_ptr<const Model> model, const ProgressFn& progress) override;
  void set_slots(int n) override;
  int slots() const override { return n_slots_; }
  void reset_slot(int slot) override;
  void get_state(int slot, std::span<float> out) override;
  void set_state(int slot, std::span<const float> in) override;
  void step(std::span<const SeqTokens> batch, float* logits) override;
  // Host-visible memory of this device, mapped: a step whose logits start such a buffer has
  // the head write them there (no copy after the step). Plain memory where it cannot be had.
  HostFloats alloc_host(size_t n) override;
  double measure_bandwidth() override;
  size_t memory_bytes() const override { return size_t(ctx_->device_bytes()); }

 private:
  // Debug capture while a hook is set (step.cpp).
  struct Capture {
    int layer;
    const char* name;
    uint64_t offset;  // bytes into the debug readback buffer
    uint32_t rows, width;
  };
  struct JobSpec {
    const DeviceMatrix* m;
    uint32_t x_off, x_stride, y_off, y_stride, flags, bias_off;
    float x_scale = 1.0f;  // see MatJob
  };
  MatStage build_stage(const std::vector<JobSpec>& specs, std::vector<MatJob>& jobs);
  void plan_scratch();
  // Plans the transposed value matrices (layers_[l].value_t) where they are wanted and fit.
  void plan_sparse_ffn(const Model& model, WeightStore& st);
  // The fold of a layer's up matrices `up` (W2, A2, G2, V2; V2 null on layer 0) with
  // `invocations` per workgroup (0: none), or none, with the reason in `unfit`, where they do
  // not fit it.
  LoraFold plan_lora_fold(std::array<const DeviceMatrix*, 4> up, uint32_t w0, uint32_t a0, uint32_t v0,
                          uint32_t invocations, std::string& unfit) const;
  void check_slot(int slot, const char* what) const;
  void invalidate_commands();

  std::vector<std::vector<StepPart>> split(std::span<const SeqTokens> batch) const;
  void run_substep(const std::vector<StepPart>& parts, float* logits);
  // Records a whole sub-step. With `debug`, flushes after the embedding and after every
  // layer, handing the named intermediates to the hook (the command buffer is replaced).
  // The debug hook takes the fused form where `wkv` is folded (it captures decay, a and g).
  void record(VkCommandBuffer& cmd, uint32_t T, uint32_t S, uint32_t R, WkvForm wkv, bool debug);
  void record_matrices(VkCommandBuffer cmd, const MatStage& stage, uint32_t n_tok, VkBuffer y, bool gather,
                       MatF16 f16 = {});
  // Sizes mat_scratch_ for the largest split-K scratch a stage may use (Kernels::matmul_plan).
  void plan_matmul_scratch();
  void capture(VkCommandBuffer cmd, int layer, const char* name, uint32_t region, uint32_t rows, uint32_t width,
               VkBuffer source = VK_NULL_HANDLE);
  void flush_captures(VkCommandBuffer& cmd);
  void ensure_logits(uint32_t R);

  std::shared_ptr<Context> ctx_;  // shared with alloc_host's buffers, which may outlive the backend
  std::unique_ptr<Kernels> kernels_;
  bool verbose_ = false;  // BackendOptions::verbose: load() reports its choices on stderr
  std::shared_ptr<const Model> model_;
  Hparams hp_;
  std::unique_ptr<WeightStore> store_;

  DeviceMatrix tok_embd_, head_;
  std::vector<DeviceMatrix> matrices_;  // per layer, in a fixed order (backend.cpp)
  std::vector<LayerPlan> layers_;
  uint32_t embd_ln_w_ = 0, embd_ln_b_ = 0, out_ln_w_ = 0, out_ln_b_ = 0;
  // The sparse value products' counters and partial sums, sized for the largest split of a
  // layer (dispatches of different layers run one after the other: each leaves its counters
  // at zero).
  Buffer sparse_parts_;
  MatStage head_stage_;
  ScratchLayout sl_;
  uint32_t logits_rows_cap_ = 0;  // most logits rows one sub-step may produce

  Buffer jobs_, scratch_;
  // The tiled matmul's split-K scratch (MatBindings::split_k): mat_counters_ words of tile
  // counters, then partial sums.
  Buffer mat_scratch_;
  uint32_t mat_counters_ = 0;
  Buffer meta_, meta_device_;  // step tables: written by the host, copied to the device per step
  Buffer logits_;              // host-visible, written by the head; logits_rows_ rows, grown on demand
  uint32_t logits_rows_ = 0;
  std::vector<Buffer> states_;  // per layer: n_slots x state_floats_per_layer
  int n_slots_ = 0;
  uint32_t meta_stride_ = 0;  // = rows_cap: tokens, row_slot, row_flags, seq_start, seq_rows, seq_slot, logit_rows

  // Recorded steps by shape (rows, sequences, logits rows, WKV form), with their profiler
  // labels.
  struct Recorded {
    VkCommandBuffer cmd = VK_NULL_HANDLE;
    std::vector<const char*> labels;
  };
  std::map<std::tuple<uint32_t, uint32_t, uint32_t, WkvForm, VkBuffer>, Recorded> commands_;
  VkBuffer head_out_ = VK_NULL_HANDLE;  // record(): where the head writes (logits_ or a HostBuffers one)

  // The buffers alloc_host gave out and not yet freed. Recorded command buffers bind them,
  // so every release is counted and the next step drops the recordings.
  struct HostBuffers {
    std::mutex mutex;
    std::map<const float*, std::pair<const Buffer*, uint64_t>> spans;  // start -> buffer, floats
    uint64_t released = 0;
  };
  std::shared_ptr<HostBuffers> host_buffers_ = std::make_shared<HostBuffers>();
  uint64_t host_released_seen_ = 0;
  std::unique_ptr<Profiler> profiler_;

  // Debug capture state (only while hook_ is set).
  Buffer debug_;
  uint64_t debug_used_ = 0;
  std::vector<Capture> captures_;
  std::vector<uint32_t> logit_rows_host_;
};

}  // namespace rwkv::vk
