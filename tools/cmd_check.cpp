// rwkv check: runs a backend next to cpu-ref on the same tokens and prints, per step, layer
// and intermediate, how far the backend is from the reference; exits 1 naming the first
// quantity over its tolerance (runtime/check.h).
#include <cstdio>
#include <optional>

#include "commands.h"
#include "common.h"
#include "common/error.h"
#include "gguf/gguf.h"
#include "runtime/check.h"

namespace rwkv::cli {

namespace {

// Short enough for cpu-ref to run in a blink, long enough to make the prefill step multi-token.
constexpr const char* kDefaultText = "The jury said it did not find any evidence.";

struct CheckArgs {
  ModelArgs model;
  std::string ref = "cpu-ref";
  std::vector<std::string> tokens;
  std::string text;
  std::optional<double> tolerance, logits_tolerance;  // absent: CheckTolerance::for_model
};

std::unique_ptr<Backend> load_backend(const std::string& name, const ModelArgs& args,
                                      const std::shared_ptr<const Model>& model) {
  std::vector<std::string> notes;
  auto backend = create_backend(name, args.backend_options(), &notes);
  for (const std::string& n : notes) std::fprintf(stderr, "note: %s\n", n.c_str());
  ProgressBar bar("loading " + backend->name());
  backend->load(model, [&](size_t done, size_t total) { bar.update(double(done), double(total)); });
  return backend;
}

void print_report(const CheckReport& report) {
  std::printf("%s against %s, %d tokens\n", report.test_backend.c_str(), report.ref_backend.c_str(), report.n_tokens);
  std::string phase;
  for (size_t i = 0; i < report.entries.size(); ++i) {
    const CheckEntry& e = report.entries[i];
    if (e.phase != phase) {
      phase = e.phase;
      std::printf("\n%s step\n%5s  %-16s %-14s %10s %10s %9s\n", phase.c_str(), "layer", "name", "rows x width",
                  "rel L2", "max abs", "tolerance");
    }
    const std::string dims = std::to_string(e.rows) + " x " + std::to_string(e.width);
    std::string mark;
    if (report.first_divergence == i)
      mark = "  <- first divergence";
    else if (e.diverged())
      mark = "  over";
    if (!e.problem.empty()) mark += "  (" + e.problem + ")";
    if (e.missing)
      std::printf("%5d  %-16s %-14s %10s %10s %9.0e  (not reported by %s)\n", e.layer, e.name.c_str(), dims.c_str(),
                  "-", "-", e.tolerance, report.test_backend.c_str());
    else
      std::printf("%5d  %-16s %-14s %10.3e %10.3e %9.0e%s\n", e.layer, e.name.c_str(), dims.c_str(), e.rel_l2,
                  e.max_abs, e.tolerance, mark.c_str());
  }
  std::printf("\n");
}

void run_check(const CheckArgs& args) {
  if (!args.tokens.empty() && !args.text.empty()) throw UsageError("give --tokens or --text, not both");
  const auto model = Model::load(resolve_model(args.model.model));
  std::vector<int32_t> ids = parse_token_ids(args.tokens);
  if (args.tokens.empty())
    ids = Tokenizer::from_gguf(model->file()).encode(args.text.empty() ? kDefaultText : args.text);
  if (ids.empty()) throw UsageError("no tokens to run");
  for (int32_t id : ids)
    if (id >= model->hparams().n_vocab)
      throw UsageError("token id " + std::to_string(id) + " is outside the vocabulary of " +
                       std::to_string(model->hparams().n_vocab));
  auto test = load_backend(args.model.backend, args.model, model);
  auto ref = load_backend(args.ref, args.model, model);
  CheckTolerance tolerance = CheckTolerance::for_model(*model);
  if (args.tolerance) tolerance.activations = *args.tolerance;
  if (args.logits_tolerance) tolerance.logits = *args.logits_tolerance;
  const CheckReport report = compare_backends(*model, *test, *ref, ids, tolerance);
  print_report(report);
  if (!report.passed()) fail(ErrorCode::backend, report.summary());
  std::printf("%s\n", report.summary().c_str());
}

}  // namespace

void register_check(CLI::App& app) {
  auto args = std::make_shared<CheckArgs>();
  CLI::App* cmd = app.add_subcommand(
      "check", "Compare a backend's intermediates with cpu-ref's and name the first that diverges (exit 1)");
  add_model_option(*cmd, args->model);
  add_backend_options(*cmd, args->model);
  cmd->add_option("--ref", args->ref, "Reference backend")->capture_default_str();
  cmd->add_option("--tokens", args->tokens, "Token ids to run: 1,2,3 or 1 2 3");
  cmd->add_option("--text", args->text,
                  std::string("Text to run instead of --tokens (default: \"") + kDefaultText + "\")");
  cmd->add_option("--tolerance", args->tolerance,
                  "Largest rel L2 error of an intermediate or state (default 1e-2, 5e-2 for quantised models)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--logits-tolerance", args->logits_tolerance,
                  "Largest rel L2 error of the logits (default 5e-3, 2e-2 for quantised models)")
      ->check(CLI::PositiveNumber);
  cmd->callback([args] { run_check(*args); });
}

}  // namespace rwkv::cli
