// The backend interface: one object per device. A backend is handed a whole model step
// for many sequences x many tokens, so it can fuse a layer into a few kernels and record
// the step once (CUDA graph, Vulkan command buffer). Each backend owns its memory; data
// crosses between backends only through host copies made here.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"

namespace rwkv {

// The tokens one sequence contributes to a step.
struct SeqTokens {
  int slot = 0;                     // which state slot (0 .. n_slots-1); each slot once per step
  const int32_t* tokens = nullptr;  // n_tokens ids, each < n_vocab
  int n_tokens = 0;                 // >= 1
  bool all_logits = false;          // logits for every token, or only for the last
};

// Named intermediates (design/backends.md): per layer "att.ln", "att.xr", "att.xw",
// "att.xk", "att.xv", "att.xa", "att.xg", "att.r", "att.decay", "att.k", "att.v" (after
// the value-residual mix), "att.a", "att.g", "att.kk" (normalised removal key),
// "att.k_mod", "att.wkv" (WKV read-out, before ln_x), "att.lnx" (ln_x output + bonus),
// "att.out", "ffn.ln", "ffn.xk", "ffn.hidden" (relu^2), "ffn.out", "layer.out"; at
// layer -1: "embed", "embed.ln", and for the rows that produce logits "head.ln", "logits".
// `rows` is the number of tokens in the step (sequence-major, in batch order) and `width`
// the vector length of one row (C, F, Dw-sized heads are not exported). Only called while
// a hook is set; a backend may run slower then.
using DebugHook = std::function<void(int layer, std::string_view name, int rows, int width, const float* data)>;

using ProgressFn = std::function<void(size_t done_bytes, size_t total_bytes)>;

// Host floats from Backend::alloc_host, freed by their deleter.
using HostFloats = std::unique_ptr<float[], std::function<void(float*)>>;

struct BackendOptions {
  int n_threads = 0;  // CPU backends: 0 = all hardware threads
  int device = -1;    // GPU backends: adapter index, -1 = pick the best
  bool verbose = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;         // "cpu-ref", "cpu", "cuda", "vulkan"
  virtual std::string device_name() const = 0;  // e.g. "NVIDIA H100 80GB HBM3", CPU model

  // Takes the weights (upload or keep views). Called once, before anything else.
  virtual void load(std::shared_ptr<const Model> model, const ProgressFn& progress) = 0;
  // Makes n state slots, all zero. Previous slots are dropped.
  virtual void set_slots(int n) = 0;
  virtual int slots() const = 0;
  virtual void reset_slot(int slot) = 0;
  // Host copy of one slot's state: Hparams::state_floats() floats, layout in model.h.
  virtual void get_state(int slot, std::span<float> out) = 0;
  virtual void set_state(int slot, std::span<const float> in) = 0;
  // Runs every layer for the given sequences and updates their states. Writes n_vocab
  // floats per logits row to `logits`, sequences in batch order, each giving n_tokens rows
  // if all_logits else its last row; `logits` holds sum(rows) * n_vocab floats.
  virtual void step(std::span<const SeqTokens> batch, float* logits) = 0;
  // Host memory for n floats that this backend's step() fills fastest as `logits`: page-
  // locked and mapped for CUDA, whose head product then writes the logits there itself
  // (a download into ordinary memory goes through a driver bounce buffer). Plain memory
  // elsewhere. It may outlive the backend.
  virtual HostFloats alloc_host(size_t n) {
    return HostFloats(new float[n], [](float* p) { delete[] p; });
  }

  virtual void set_debug_hook(DebugHook hook) { hook_ = std::move(hook); }
  // The bandwidth of the memory this backend streams its weights from, GB/s: a copy between
  // two buffers of that memory, several times its caches, at its best; bytes read plus bytes
  // written over the time (the limit `rwkv bench` reports decode against). 0 where it is not
  // measured. Allocates the buffers for the measurement only; takes well under a second.
  virtual double measure_bandwidth() { return 0; }
  // Device memory this backend holds (weights + states + scratch), bytes.
  virtual size_t memory_bytes() const = 0;

 protected:
  DebugHook hook_;
};

// Backend names this build knows, in `auto` preference order: cuda, vulkan, cpu, cpu-ref.
std::vector<std::string> backend_names();
// Creates a backend by name ("auto" tries cuda, then a GPU Vulkan device, then cpu, and
// reports each fall-through with one line to `notes`). Throws Error(backend) with the
// reason when a named backend cannot start.
std::unique_ptr<Backend> create_backend(std::string_view name, const BackendOptions& options,
                                        std::vector<std::string>* notes = nullptr);

}  // namespace rwkv
