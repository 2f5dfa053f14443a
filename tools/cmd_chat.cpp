// rwkv chat: an interactive conversation in RWKV's chat format (spec §5.5). Each turn sends
// "User: {text}\n\nAssistant:" and streams the answer until the model writes the "\n\n"
// round separator. The recurrent state carries the whole conversation, so a turn only
// feeds its own tokens.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "common.h"

namespace rwkv::cli {

namespace {

struct ChatArgs {
  ModelArgs model;
  SamplerParams sampling;
  std::string system;
  int max_tokens = 1024;
};

// User text as the model expects it: "\r\n" -> "\n" and runs of newlines collapsed, so that
// "\n\n" only ever separates rounds.
std::string clean_message(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;  // \r\n -> \n
    if (text[i] == '\n' && !out.empty() && out.back() == '\n') continue;          // \n{2,} -> \n
    out += text[i];
  }
  // Surrounding blanks would touch the "User: " prefix or the "\n\n" that follows (a CRLF
  // line read by getline keeps its '\r').
  const char* const blanks = " \t\r\n";
  const size_t first = out.find_first_not_of(blanks);
  if (first == std::string::npos) return "";
  return out.substr(first, out.find_last_not_of(blanks) - first + 1);
}

const char* const kHelp =
    "Commands: /save FILE (state to a file), /load FILE, /reset (forget the conversation), /quit. "
    "Anything else is sent as your message.";

class ChatSession {
 public:
  ChatSession(Engine& engine, const ChatArgs& args) : engine_(engine), args_(args) {}

  // Handles one input line; returns false when the session should end.
  bool handle(const std::string& line) {
    if (!line.empty() && line[0] == '/') return command(line);
    const std::string text = clean_message(line);
    if (text.empty()) return true;
    answer(text);
    return true;
  }

 private:
  bool command(const std::string& line) {
    std::istringstream in(line);
    std::string name, arg;
    in >> name;
    std::getline(in >> std::ws, arg);
    try {
      if (name == "/quit" || name == "/exit") return false;
      if (name == "/reset") {
        engine_.reset(0);
        turns_ = 0;
        separator_pending_ = false;
        note("conversation reset");
      } else if ((name == "/save" || name == "/load") && !arg.empty()) {
        if (name == "/save") {
          engine_.save_state(0, arg);
          note("state saved to " + arg);
        } else {
          engine_.load_state(0, arg);
          // A saved state ends after a complete round; keep the system prompt out of it.
          turns_ = 1;
          separator_pending_ = false;
          note("state loaded from " + arg);
        }
      } else {
        note(kHelp);
      }
    } catch (const std::exception& e) {
      // A failed command leaves the conversation as it was: report and go on.
      std::fprintf(stderr, "rwkv chat: %s\n", e.what());
    }
    return true;
  }

  void answer(const std::string& text) {
    std::string prompt;
    if (separator_pending_) prompt += "\n\n";
    if (turns_ == 0 && !args_.system.empty()) prompt += "System: " + clean_message(args_.system) + "\n\n";
    prompt += "User: " + text + "\n\nAssistant:";

    // generate() counts penalties over this answer's tokens only; the seed moves on per turn so that repeated questions
    // get fresh samples.
    SamplerParams params = args_.sampling;
    params.seed += uint64_t(turns_);
    Sampler sampler(params);
    GenerateOptions options;
    options.max_tokens = args_.max_tokens;
    options.stop = {"\n\n"};
    bool at_start = true;
    const GenerateResult r = generate(engine_, 0, prompt, sampler, options, [&](const std::string& piece) {
      // The model answers "Assistant: ..." with a leading space: do not print it.
      std::string_view out = piece;
      if (at_start && !out.empty() && out.front() == ' ') out.remove_prefix(1);
      at_start = at_start && out.empty();
      std::cout << out << std::flush;
      return true;
    });
    std::cout << "\n" << std::flush;
    ++turns_;
    // "\n\n" stays in the context when the model wrote it; otherwise the next turn adds it.
    separator_pending_ = r.stop_reason != "stop";
    const double tps = r.decode_seconds > 0 ? r.n_generated / r.decode_seconds : 0.0;
    char stats[96];
    std::snprintf(stats, sizeof(stats), "[%d tokens, %.1f tok/s]", r.n_generated, tps);
    note(stats);
  }

  // A dim line on stderr (plain when stderr is not a terminal).
  static void note(const std::string& text) {
    if (stderr_is_tty())
      std::fprintf(stderr, "\x1b[2m%s\x1b[0m\n", text.c_str());
    else
      std::fprintf(stderr, "%s\n", text.c_str());
  }

  Engine& engine_;
  const ChatArgs& args_;
  int turns_ = 0;
  bool separator_pending_ = false;
};

void run_chat(const ChatArgs& args) {
  auto engine = open_engine(args.model);
  ChatSession session(*engine, args);
  const bool interactive = isatty(STDIN_FILENO) == 1;
  if (interactive) std::fprintf(stderr, "%s\n", kHelp);
  std::string line;
  while (true) {
    if (interactive) std::cout << "> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    if (!session.handle(line)) break;
  }
  if (interactive) std::cout << "\n";
}

}  // namespace

void register_chat(CLI::App& app) {
  auto args = std::make_shared<ChatArgs>();
  CLI::App* cmd = app.add_subcommand("chat", "Interactive chat (reads stdin line by line; works with a pipe)");
  add_model_option(*cmd, args->model);
  add_backend_options(*cmd, args->model);
  cmd->add_option("--system", args->system, "System prompt, sent as \"System: TEXT\" before the first message");
  cmd->add_option("-n,--max-tokens", args->max_tokens, "Tokens per answer at most")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_sampling_options(*cmd, args->sampling);
  cmd->callback([args] { run_chat(*args); });
}

}  // namespace rwkv::cli
