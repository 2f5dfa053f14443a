#include "common.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common/error.h"

namespace rwkv::cli {

namespace fs = std::filesystem;

namespace {

// Directories searched for models/<file> when -m is absent, best first.
std::vector<std::string> default_model_candidates() {
  std::vector<std::string> dirs;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path bin = exe.parent_path();
    dirs.push_back((bin / ".." / "..").lexically_normal().string());              // build tree: <build>/tools/rwkv
    dirs.push_back((bin / ".." / "share" / "rwkv").lexically_normal().string());  // installed: <prefix>/bin/rwkv
  }
  dirs.push_back(".");
  return dirs;
}

}  // namespace

std::string default_model_help() {
  return std::string("Without -m, the demo model ") + kDefaultModel +
         " is used, looked up next to the executable (<exe>/../../models, <exe>/../share/rwkv/models), then in "
         "./models.";
}

std::string resolve_model(const std::string& given) {
  if (!given.empty()) return given;
  std::string looked;
  for (const std::string& dir : default_model_candidates()) {
    const fs::path p = fs::path(dir) / kDefaultModel;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
    looked += (looked.empty() ? "" : ", ") + p.string();
  }
  fail(ErrorCode::io, "no model given (-m) and the default model was not found (looked for " + looked + ")");
}

BackendOptions ModelArgs::backend_options() const {
  BackendOptions o;
  o.n_threads = threads;
  o.device = device;
  o.verbose = verbose;
  return o;
}

void add_model_option(CLI::App& cmd, ModelArgs& args) {
  cmd.add_option("-m,--model", args.model, "GGUF model file (default: the demo model, see below)");
  cmd.footer(default_model_help());
}

void add_backend_options(CLI::App& cmd, ModelArgs& args) {
  std::string names = "auto";
  for (const std::string& n : backend_names()) names += ", " + n;
  cmd.add_option("--backend", args.backend, "Backend: " + names)->capture_default_str();
  cmd.add_option("-t,--threads", args.threads, "CPU threads (0: all hardware threads)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--device", args.device, "GPU adapter index (-1: the best one)")->capture_default_str();
  cmd.add_flag("-v,--verbose", args.verbose, "Print the backend and device chosen");
}

std::unique_ptr<Engine> open_engine(const ModelArgs& args, int n_slots, int prefill_chunk) {
  EngineOptions options;
  options.backend = args.backend;
  options.backend_options = args.backend_options();
  options.n_slots = n_slots;
  options.prefill_chunk = prefill_chunk;
  auto bar = std::make_shared<ProgressBar>("loading");
  options.progress = [bar](size_t done, size_t total) {
    bar->update(double(done), double(total), format_bytes(double(done)) + " / " + format_bytes(double(total)));
  };
  // With --backend auto, each backend skipped is worth one line: it says why the GPU is not used.
  options.on_note = [](const std::string& note) { std::cerr << "note: " << note << "\n"; };
  auto engine = Engine::open(resolve_model(args.model), options);
  bar->finish();
  if (args.verbose)
    std::cerr << "backend: " << engine->backend().name() << " (" << engine->backend().device_name() << ")\n";
  return engine;
}

void add_sampling_options(CLI::App& cmd, SamplerParams& p) {
  cmd.add_option("--temp", p.temperature, "Temperature (<= 0: greedy)")->capture_default_str();
  cmd.add_option("--top-k", p.top_k, "Keep the k most likely tokens (0: off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--top-p", p.top_p, "Nucleus sampling mass (1: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd.add_option("--min-p", p.min_p, "Drop tokens below min-p x the best probability (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd.add_option("--presence-penalty", p.presence_penalty, "Subtracted once from a seen token's logit")
      ->capture_default_str();
  cmd.add_option("--frequency-penalty", p.frequency_penalty, "Subtracted per (decayed) occurrence")
      ->capture_default_str();
  cmd.add_option("--penalty-decay", p.penalty_decay, "Occurrence counts decay by this factor per token")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd.add_option("--seed", p.seed, "Random seed")->capture_default_str();
  // Defined after --temp and the penalties so that its callback runs last and wins.
  cmd.add_flag_callback(
      "--greedy",
      [&p] {
        p.temperature = 0;
        p.presence_penalty = 0;
        p.frequency_penalty = 0;
      },
      "Always pick the most likely token, with no penalties (overrides --temp and the penalties)");
}

bool stderr_is_tty() { return isatty(STDERR_FILENO) == 1; }

ProgressBar::ProgressBar(std::string label) : label_(std::move(label)), enabled_(stderr_is_tty()) {}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(double done, double total, const std::string& detail) {
  if (!enabled_ || total <= 0) return;
  const int permille = int(std::min(1.0, done / total) * 1000);
  if (permille == last_permille_) return;  // redraw only on visible change
  last_permille_ = permille;
  constexpr int kWidth = 30;
  const int filled = permille * kWidth / 1000;
  std::string bar(size_t(filled), '#');
  bar.resize(kWidth, ' ');
  std::fprintf(stderr, "\r%s [%s] %5.1f%% %s\x1b[K", label_.c_str(), bar.c_str(), permille / 10.0, detail.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::finish() {
  if (!drawn_) return;
  // Clear the bar: what follows (the answer, a table) starts on a clean line.
  std::fprintf(stderr, "\r\x1b[K");
  std::fflush(stderr);
  drawn_ = false;
}

std::string unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    const char c = text[++i];
    switch (c) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case '\\':
        out += '\\';
        break;
      case 'x':
        if (i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
            std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
          out += char(std::stoi(text.substr(i + 1, 2), nullptr, 16));
          i += 2;
          break;
        }
        [[fallthrough]];
      default:  // not an escape we know: keep it as written
        out += '\\';
        out += c;
    }
  }
  return out;
}

std::vector<int32_t> parse_token_ids(const std::vector<std::string>& args) {
  std::vector<int32_t> ids;
  for (const std::string& arg : args) {
    size_t i = 0;
    while (i < arg.size()) {
      if (arg[i] == ',' || arg[i] == ' ') {
        ++i;
        continue;
      }
      size_t end = i;
      while (end < arg.size() && arg[end] >= '0' && arg[end] <= '9') ++end;
      if (end == i || end - i > 9)
        throw UsageError("bad token id list '" + arg + "' (expected non-negative integers separated by , or spaces)");
      ids.push_back(int32_t(std::stol(arg.substr(i, end - i))));
      i = end;
    }
  }
  return ids;
}

std::string format_bytes(double bytes) {
  char buf[32];
  if (bytes >= 1024.0 * 1024 * 1024)
    std::snprintf(buf, sizeof(buf), "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
  else if (bytes >= 1024.0 * 1024)
    std::snprintf(buf, sizeof(buf), "%.2f MiB", bytes / (1024.0 * 1024));
  else if (bytes >= 1024.0)
    std::snprintf(buf, sizeof(buf), "%.2f KiB", bytes / 1024.0);
  else
    std::snprintf(buf, sizeof(buf), "%.0f B", bytes);
  return buf;
}

std::string format_count(double n) {
  char buf[32];
  if (n >= 1e9)
    std::snprintf(buf, sizeof(buf), "%.2f B", n / 1e9);
  else if (n >= 1e6)
    std::snprintf(buf, sizeof(buf), "%.2f M", n / 1e6);
  else if (n >= 1e3)
    std::snprintf(buf, sizeof(buf), "%.2f K", n / 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%.0f", n);
  return buf;
}

}  // namespace rwkv::cli
