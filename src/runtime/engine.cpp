#include "runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "gguf/gguf.h"

namespace rwkv {

namespace {

constexpr char kStateMagic[8] = {'R', 'W', 'K', 'V', 'S', 'T', 'A', 'T'};
constexpr uint32_t kStateVersion = 1;

struct Fnv64 {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  }
  template <class T>
  void add(const T& v) {
    add(&v, sizeof(v));
  }
};

uint64_t model_fingerprint(const Model& m) {
  Fnv64 f;
  const Hparams& hp = m.hparams();
  for (int v : {hp.n_embd, hp.n_layer, hp.head_size, hp.n_ffn, hp.n_vocab, hp.rank_w, hp.rank_a, hp.rank_v, hp.rank_g})
    f.add(v);
  for (const Weight* w : m.all_weights()) {
    f.add(w->name.data(), w->name.size());
    f.add(uint32_t(w->type));
    f.add(w->ne);
    // A sample of the bytes: enough to tell two trainings of one shape apart.
    f.add(w->data, std::min<size_t>(w->nbytes, 64));
    if (w->nbytes > 64) f.add(w->data + w->nbytes - 64, 64);
  }
  return f.h;
}

}  // namespace

std::unique_ptr<Engine> Engine::open(const std::string& model_path, const EngineOptions& options) {
  auto model = Model::load(model_path);
  Tokenizer tok = Tokenizer::from_gguf(model->file());
  if (tok.vocab_size() != model->hparams().n_vocab)
    fail(ErrorCode::model, model_path + ": tokenizer.ggml.tokens has " + std::to_string(tok.vocab_size()) +
                               " entries but token_embd.weight has " + std::to_string(model->hparams().n_vocab) +
                               " rows");
  std::vector<std::string> notes;
  auto backend = create_backend(options.backend, options.backend_options, &notes);
  if (options.on_note && options.backend == "auto")
    for (const std::string& n : notes) options.on_note(n);
  backend->load(model, options.progress);
  return std::make_unique<Engine>(model, std::move(backend), std::move(tok), options);
}

Engine::Engine(std::shared_ptr<const Model> model, std::unique_ptr<Backend> backend, Tokenizer tokenizer,
               const EngineOptions& options)
    : model_(std::move(model)), backend_(std::move(backend)), tokenizer_(std::move(tokenizer)), options_(options) {
  if (options_.n_slots < 1) fail(ErrorCode::argument, "engine: n_slots must be >= 1");
  if (options_.prefill_chunk < 1) fail(ErrorCode::argument, "engine: prefill_chunk must be >= 1");
  backend_->set_slots(options_.n_slots);
  fingerprint_ = model_fingerprint(*model_);
}

void Engine::feed(int slot, std::span<const int32_t> tokens, float* last_logits) {
  std::vector<float> scratch;
  for (size_t pos = 0; pos < tokens.size(); pos += size_t(options_.prefill_chunk)) {
    const size_t n = std::min(tokens.size() - pos, size_t(options_.prefill_chunk));
    const bool last = pos + n == tokens.size();
    float* out = last_logits;
    if (!last || !out) {
      scratch.resize(size_t(n_vocab()));
      out = scratch.data();
    }
    SeqTokens s{slot, tokens.data() + pos, int(n), false};
    backend_->step({&s, 1}, out);
  }
}

std::vector<float> Engine::feed_all(int slot, std::span<const int32_t> tokens) {
  std::vector<float> logits(tokens.size() * size_t(n_vocab()));
  for (size_t pos = 0; pos < tokens.size(); pos += size_t(options_.prefill_chunk)) {
    const size_t n = std::min(tokens.size() - pos, size_t(options_.prefill_chunk));
    SeqTokens s{slot, tokens.data() + pos, int(n), true};
    backend_->step({&s, 1}, logits.data() + pos * size_t(n_vocab()));
  }
  return logits;
}

void Engine::decode(std::span<const int> slots, std::span<const int32_t> tokens, float* logits) {
  if (slots.size() != tokens.size()) fail(ErrorCode::argument, "decode: slots and tokens differ in length");
  std::vector<SeqTokens> batch(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) batch[i] = SeqTokens{slots[i], &tokens[i], 1, false};
  backend_->step(batch, logits);
}

std::span<float> Engine::logits_buffer(size_t rows) {
  if (rows > logits_rows_) {
    logits_.reset();   // the old buffer first: page-locked memory is scarce
    logits_rows_ = 0;  // and none held if the allocation throws
    logits_ = backend_->alloc_host(rows * size_t(n_vocab()));
    logits_rows_ = rows;
  }
  return {logits_.get(), rows * size_t(n_vocab())};
}

std::vector<float> Engine::get_state(int slot) {
  std::vector<float> s(hparams().state_floats());
  backend_->get_state(slot, s);
  return s;
}

void Engine::set_state(int slot, std::span<const float> state) { backend_->set_state(slot, state); }

void Engine::clone_state(int from, int to) {
  const std::vector<float> s = get_state(from);
  set_state(to, s);
}

void Engine::save_state(int slot, const std::string& path) {
  const std::vector<float> s = get_state(slot);
  const Hparams& hp = hparams();
  std::vector<uint8_t> buf;
  auto put = [&](const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  };
  const uint32_t header[6] = {kStateVersion, 0, uint32_t(hp.n_layer), uint32_t(hp.n_embd), uint32_t(hp.head_size), 0};
  const uint64_t n = s.size();
  put(kStateMagic, 8);
  put(header, sizeof(header));
  put(&fingerprint_, 8);
  put(&n, 8);
  put(s.data(), s.size() * sizeof(float));
  Fnv64 sum;
  sum.add(buf.data(), buf.size());
  put(&sum.h, 8);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(ErrorCode::io, "cannot write state file '" + path + "': " + std::strerror(errno));
    out.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(buf.size()));
    if (!out.flush()) fail(ErrorCode::io, "cannot write state file '" + path + "': write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail(ErrorCode::io, "cannot write state file '" + path + "': " + std::strerror(errno));
}

void Engine::load_state(int slot, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::io, "cannot open state file '" + path + "': " + std::strerror(errno));
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t head = 8 + 24 + 8 + 8;
  if (buf.size() < head + 8 || std::memcmp(buf.data(), kStateMagic, 8) != 0)
    fail(ErrorCode::state, "'" + path + "' is not an rwkv state file");
  uint32_t header[6];
  uint64_t fp, n, stored_sum;
  std::memcpy(header, buf.data() + 8, 24);
  std::memcpy(&fp, buf.data() + 32, 8);
  std::memcpy(&n, buf.data() + 40, 8);
  if (header[0] != kStateVersion)
    fail(ErrorCode::state, "state file '" + path + "' has version " + std::to_string(header[0]) +
                               ", this build reads " + std::to_string(kStateVersion));
  if (n != hparams().state_floats() || buf.size() != head + n * sizeof(float) + 8)
    fail(ErrorCode::state, "state file '" + path + "' holds " + std::to_string(n) + " floats, this model's state has " +
                               std::to_string(hparams().state_floats()) + " (or the file is truncated)");
  std::memcpy(&stored_sum, buf.data() + buf.size() - 8, 8);
  Fnv64 sum;
  sum.add(buf.data(), buf.size() - 8);
  if (sum.h != stored_sum) fail(ErrorCode::state, "state file '" + path + "' is corrupt (checksum mismatch)");
  if (fp != fingerprint_)
    fail(ErrorCode::state, "state file '" + path + "' was saved from another model (fingerprint differs)");
  std::vector<float> s(n);
  std::memcpy(s.data(), buf.data() + head, n * sizeof(float));
  set_state(slot, s);
}

GenerateResult generate(Engine& engine, int slot, const std::string& prompt, Sampler& sampler,
                        const GenerateOptions& options, const std::function<bool(const std::string&)>& on_text) {
  using clock = std::chrono::steady_clock;
  GenerateResult res;
  const std::vector<int32_t> ids = engine.tokenizer().encode(prompt);
  res.n_prompt = int(ids.size());
  // The engine's logits row (page-locked on CUDA: a one-row download takes 12 us there
  // instead of 46 us into ordinary memory), fetched at each use: on_text may run anything.
  const auto logits = [&engine] { return engine.logits_buffer(1).data(); };
  const auto t0 = clock::now();
  if (!ids.empty()) engine.feed(slot, ids, logits());
  // Penalties count only the tokens of this answer, as RWKV's chat demos do.
  const auto t1 = clock::now();
  res.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  if (ids.empty()) fail(ErrorCode::argument, "generate: empty prompt");

  StreamDecoder dec(engine.tokenizer());
  // Text decoded but not yet shown: held back while it could still be the start of a stop
  // string.
  std::string held;
  bool keep_going = true;
  res.stop_reason = "length";
  auto release = [&](size_t keep) {
    if (held.size() > keep) {
      const std::string out = held.substr(0, held.size() - keep);
      held.erase(0, held.size() - keep);
      res.text += out;
      if (on_text && !on_text(out)) keep_going = false;
    }
  };
  while (keep_going && res.n_generated < options.max_tokens) {
    const int32_t tok = sampler.sample(logits(), engine.n_vocab());
    sampler.accept(tok);
    ++res.n_generated;
    if (tok == 0 && options.stop_at_eos) {
      res.stop_reason = "eos";
      break;
    }
    held += dec.push(tok);
    bool stopped = false;
    for (const std::string& s : options.stop) {
      const size_t at = held.find(s);
      if (!s.empty() && at != std::string::npos) {
        held.erase(at);
        stopped = true;
      }
    }
    if (stopped) {
      // The stop text stays in the context, as the model wrote it.
      engine.feed(slot, {&tok, 1}, logits());
      res.stop_reason = "stop";
      break;
    }
    // Keep back the longest tail that is a prefix of some stop string.
    size_t keep = 0;
    for (const std::string& s : options.stop)
      for (size_t k = std::min(s.size() - 1, held.size()); k > keep; --k)
        if (held.compare(held.size() - k, k, s, 0, k) == 0) {
          keep = k;
          break;
        }
    release(keep);
    if (!keep_going) break;
    engine.feed(slot, {&tok, 1}, logits());
  }
  if (res.stop_reason != "stop") held += dec.flush();
  release(0);
  res.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return res;
}

}  // namespace rwkv
