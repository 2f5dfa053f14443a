// The runtime: a model, its tokenizer and one backend, with per-sequence state slots.
// Everything above (tools, C API, server) talks to this.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace rwkv {

struct EngineOptions {
  std::string backend = "auto";  // auto, cuda, vulkan, cpu, cpu-ref
  BackendOptions backend_options;
  int n_slots = 1;                                  // sequences that can be live at once
  int prefill_chunk = 512;                          // tokens per step when feeding a long prompt (llama.cpp's ubatch)
  ProgressFn progress;                              // weight upload progress
  std::function<void(const std::string&)> on_note;  // one-line notes (backend fall-through)
};

class Engine {
 public:
  static std::unique_ptr<Engine> open(const std::string& model_path, const EngineOptions& options = {});
  Engine(std::shared_ptr<const Model> model, std::unique_ptr<Backend> backend, Tokenizer tokenizer,
         const EngineOptions& options);

  const Model& model() const { return *model_; }
  const Hparams& hparams() const { return model_->hparams(); }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  Backend& backend() { return *backend_; }
  int n_vocab() const { return model_->hparams().n_vocab; }

  // Feeds tokens to a slot in chunks; writes the last token's logits (n_vocab floats) when
  // `last_logits` is not null.
  void feed(int slot, std::span<const int32_t> tokens, float* last_logits);
  // Feeds tokens and returns the logits of every position ([n_tokens x n_vocab]).
  std::vector<float> feed_all(int slot, std::span<const int32_t> tokens);
  // One decode step for many slots at once: tokens[i] goes to slots[i]; logits
  // [n x n_vocab].
  void decode(std::span<const int> slots, std::span<const int32_t> tokens, float* logits);
  // [rows x n_vocab] floats of the backend's fastest host memory for logits (page-locked
  // for CUDA: a 256-row download then runs at the link's speed). Valid until a later call
  // asks for more rows.
  std::span<float> logits_buffer(size_t rows);

  void reset(int slot) { backend_->reset_slot(slot); }
  std::vector<float> get_state(int slot);
  void set_state(int slot, std::span<const float> state);
  void clone_state(int from, int to);
  // State files: versioned, checksummed, tied to this model's fingerprint.
  void save_state(int slot, const std::string& path);
  void load_state(int slot, const std::string& path);
  // 64-bit fingerprint of the model's shapes, types and a sample of every tensor's bytes.
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Backend> backend_;
  Tokenizer tokenizer_;
  EngineOptions options_;
  uint64_t fingerprint_ = 0;
  HostFloats logits_;
  size_t logits_rows_ = 0;
};

// Text generation with streaming output and stop strings, on one slot.
struct GenerateOptions {
  int max_tokens = 256;
  std::vector<std::string> stop;  // stop when the output ends with one of these (not printed)
  bool stop_at_eos = true;        // token 0
};
struct GenerateResult {
  std::string text;
  int n_prompt = 0, n_generated = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  std::string stop_reason;  // "length", "eos", "stop"
};
// Feeds `prompt` (already in the slot's context or not: it is appended), then samples.
// on_text receives printable text pieces as they become safe to print; return false to
// stop early.
GenerateResult generate(Engine& engine, int slot, const std::string& prompt, Sampler& sampler,
                        const GenerateOptions& options, const std::function<bool(const std::string&)>& on_text);

}  // namespace rwkv
