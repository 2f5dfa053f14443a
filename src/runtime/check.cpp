#include "runtime/check.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <tuple>

#include "common/error.h"

namespace rwkv {

namespace {

// What one backend reported for one (layer, name) during one step. A backend may report
// a name more than once per step (e.g. in chunks); the rows are appended.
struct Capture {
  int rows = 0, width = 0;
  bool width_changed = false;
  std::vector<float> data;
};

struct StepCapture {
  std::map<std::pair<int, std::string>, Capture> by_key;
  std::vector<std::pair<int, std::string>> order;  // first report order
};

DebugHook recorder(StepCapture& out) {
  return [&out](int layer, std::string_view name, int rows, int width, const float* data) {
    auto key = std::make_pair(layer, std::string(name));
    auto [it, inserted] = out.by_key.try_emplace(key);
    Capture& c = it->second;
    if (inserted) {
      out.order.push_back(key);
      c.width = width;
    } else if (c.width != width) {
      c.width_changed = true;
    }
    c.rows += rows;
    c.data.insert(c.data.end(), data, data + size_t(rows) * size_t(width));
  };
}

// Installs a hook for one step and removes it however the step ends (the hook refers to
// captures on the caller's stack).
class HookScope {
 public:
  HookScope(Backend& backend, DebugHook hook) : backend_(backend) { backend_.set_debug_hook(std::move(hook)); }
  ~HookScope() { backend_.set_debug_hook({}); }
  HookScope(const HookScope&) = delete;
  HookScope& operator=(const HookScope&) = delete;

 private:
  Backend& backend_;
};

void compare_values(std::span<const float> test, std::span<const float> ref, CheckEntry& e) {
  double diff2 = 0, ref2 = 0, max_abs = 0;
  bool finite = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(test[i]) - double(ref[i]);
    finite = finite && std::isfinite(test[i]) && std::isfinite(ref[i]);
    diff2 += d * d;
    ref2 += double(ref[i]) * double(ref[i]);
    max_abs = std::max(max_abs, std::abs(d));
  }
  e.max_abs = max_abs;
  if (!finite)
    e.rel_l2 = std::numeric_limits<double>::infinity();
  else if (ref2 == 0)
    e.rel_l2 = diff2 == 0 ? 0 : std::numeric_limits<double>::infinity();
  else
    e.rel_l2 = std::sqrt(diff2 / ref2);
}

std::string shape(int rows, int width) { return std::to_string(rows) + " x " + std::to_string(width); }

class Checker {
 public:
  Checker(const Model& model, Backend& test, Backend& ref, const CheckTolerance& tol, CheckReport& report)
      : hp_(model.hparams()), test_(test), ref_(ref), tol_(tol), report_(report) {}

  void run_step(const std::string& phase, std::span<const int32_t> tokens) {
    StepCapture test_cap, ref_cap;
    const size_t logits_size = tokens.size() * size_t(hp_.n_vocab);
    std::vector<float> test_logits(logits_size), ref_logits(logits_size);
    const SeqTokens seq{0, tokens.data(), int(tokens.size()), true};
    {
      HookScope scope(test_, recorder(test_cap));
      test_.step({&seq, 1}, test_logits.data());
    }
    {
      HookScope scope(ref_, recorder(ref_cap));
      ref_.step({&seq, 1}, ref_logits.data());
    }

    for (const auto& key : ref_cap.order) {
      const Capture& r = ref_cap.by_key.at(key);
      CheckEntry e = entry(phase, key.first, key.second, r.rows, r.width);
      auto it = test_cap.by_key.find(key);
      if (it == test_cap.by_key.end()) {
        e.missing = true;
      } else if (const Capture& t = it->second; t.rows != r.rows || t.width != r.width || t.width_changed) {
        e.problem = "shape " + shape(t.rows, t.width) + ", reference " + shape(r.rows, r.width);
        e.rel_l2 = std::numeric_limits<double>::infinity();
      } else {
        compare_values(t.data, r.data, e);
      }
      add(std::move(e));
    }
    CheckEntry out = entry(phase, -1, "step.logits", int(tokens.size()), hp_.n_vocab);
    compare_values(test_logits, ref_logits, out);
    add(std::move(out));
    compare_states(phase);
  }

 private:
  CheckEntry entry(const std::string& phase, int layer, const std::string& name, int rows, int width) const {
    CheckEntry e;
    e.phase = phase;
    e.layer = layer;
    e.name = name;
    e.rows = rows;
    e.width = width;
    e.tolerance = name == "logits" || name == "step.logits" ? tol_.logits : tol_.activations;
    return e;
  }

  void add(CheckEntry e) {
    if (!report_.first_divergence && e.diverged()) report_.first_divergence = report_.entries.size();
    report_.entries.push_back(std::move(e));
  }

  // The state each backend keeps after the step, per layer: [att_shift C][ffn_shift C][wkv H*N*N].
  void compare_states(const std::string& phase) {
    std::vector<float> t(hp_.state_floats()), r(hp_.state_floats());
    test_.get_state(0, t);
    ref_.get_state(0, r);
    const size_t C = size_t(hp_.n_embd), per_layer = hp_.state_floats_per_layer();
    const std::tuple<const char*, size_t, size_t, int> parts[] = {{"state.att_shift", 0, C, 1},
                                                                  {"state.ffn_shift", C, C, 1},
                                                                  {"state.wkv", 2 * C, per_layer - 2 * C, hp_.n_head}};
    for (int l = 0; l < hp_.n_layer; ++l)
      for (const auto& [name, offset, size, rows] : parts) {
        const size_t at = size_t(l) * per_layer + offset;
        CheckEntry e = entry(phase, l, name, rows, int(size / size_t(rows)));
        compare_values(std::span(t).subspan(at, size), std::span(r).subspan(at, size), e);
        add(std::move(e));
      }
  }

  const Hparams& hp_;
  Backend &test_, &ref_;
  const CheckTolerance& tol_;
  CheckReport& report_;
};

}  // namespace

CheckTolerance CheckTolerance::for_model(const Model& model) {
  CheckTolerance t;
  for (const Weight* w : model.all_weights())
    if (w->type != TensorType::F32 && w->type != TensorType::F16 && w->type != TensorType::BF16) {
      t.activations = 5e-2;
      t.logits = 2e-2;
      break;
    }
  return t;
}

std::string CheckReport::summary() const {
  char buf[256];
  if (first_divergence) {
    const CheckEntry& e = entries[*first_divergence];
    const std::string where = e.layer < 0 ? e.name : "layer " + std::to_string(e.layer) + " " + e.name;
    std::snprintf(buf, sizeof(buf), "rel %.3g", e.rel_l2);
    return "first divergence: " + where + " (" + (e.problem.empty() ? std::string(buf) : e.problem) + ") in the " +
           e.phase + " step";
  }
  size_t compared = 0;
  for (const CheckEntry& e : entries) compared += e.missing ? 0 : 1;
  std::snprintf(buf, sizeof(buf), "no divergence: %zu quantities of %s within tolerance of %s", compared,
                test_backend.c_str(), ref_backend.c_str());
  return buf;
}

CheckReport compare_backends(const Model& model, Backend& test, Backend& ref, std::span<const int32_t> tokens,
                             const CheckTolerance& tolerance) {
  if (tokens.empty()) fail(ErrorCode::argument, "check: no tokens to run");
  CheckReport report;
  report.test_backend = test.name();
  report.ref_backend = ref.name();
  report.n_tokens = int(tokens.size());
  test.set_slots(1);
  ref.set_slots(1);
  Checker checker(model, test, ref, tolerance, report);
  // Exercise both the multi-token path and the single-token path when there are tokens for both.
  if (tokens.size() > 1) checker.run_step("prefill", tokens.first(tokens.size() - 1));
  checker.run_step("decode", tokens.last(1));
  return report;
}

}  // namespace rwkv
