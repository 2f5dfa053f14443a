// Backend cross-check (`rwkv check`): runs the same tokens through a tested backend and a
// reference backend (normally cpu-ref), captures every named intermediate through the
// DebugHook, the returned logits and the recurrent state after each step, and reports the
// normalised error of each, in the order the reference computes them. The first quantity
// over its tolerance names the op to look at (design/backends.md, lesson 4).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"

namespace rwkv {

struct CheckTolerance {
  double activations = 1e-2;  // rel L2 for intermediates and states
  double logits = 5e-3;       // rel L2 for the "logits" intermediate and the returned logits

  // The defaults above for float weights; 5e-2 and 2e-2 when some weight is quantised,
  // because a backend may then quantise activations too (as llama.cpp's q8 dot products
  // do), which alone costs ~0.5% rel L2 per matrix product and adds up over layers. A real
  // bug (wrong index, wrong block layout) gives errors of order 0.1 to 1.
  static CheckTolerance for_model(const Model& model);
};

struct CheckEntry {
  // "prefill": every token but the last, as one multi-token step; "decode": the last
  // token alone, from the state the prefill left.
  std::string phase;
  int layer = -1;           // -1: embedding / head / returned logits
  std::string name;         // an intermediate's name, "step.logits" (what step() returned) or
                            // "state.att_shift", "state.ffn_shift", "state.wkv" (after the step)
  int rows = 0, width = 0;  // as the reference reported them
  double rel_l2 = 0;        // ||test - ref|| / ||ref|| in double; +inf for non-finite or mismatched shapes
  double max_abs = 0;       // max |test - ref|
  double tolerance = 0;
  bool missing = false;  // the tested backend did not report this intermediate
  std::string problem;   // set when the shapes differ ("rows 3 x 256, reference 4 x 256")

  bool diverged() const { return !missing && !(rel_l2 <= tolerance); }
};

struct CheckReport {
  std::string test_backend, ref_backend;
  int n_tokens = 0;
  std::vector<CheckEntry> entries;         // prefill then decode, each in the reference's order
  std::optional<size_t> first_divergence;  // index into entries

  bool passed() const { return !first_divergence.has_value(); }
  // "first divergence: layer 3 att.k (rel 0.41)" or "no divergence: ... within tolerance".
  std::string summary() const;
};

// Both backends must be loaded with `model` already. Their slots are reset to one zero
// slot and their debug hooks cleared afterwards. Throws Error(argument) for no tokens.
CheckReport compare_backends(const Model& model, Backend& test, Backend& ref, std::span<const int32_t> tokens,
                             const CheckTolerance& tolerance = {});

}  // namespace rwkv
