// The C API (include/rwkv/rwkv.h) over rwkv::Engine and rwkv::Sampler. Every entry point
// runs its body inside `guarded`, which turns exceptions into status codes and the
// thread-local last error, so nothing C++ crosses the boundary.
#include "rwkv/rwkv.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "runtime/engine.h"
#include "runtime/sampler.h"

// The status codes 1-7 are rwkv::ErrorCode's values; keep them in step.
static_assert(int(rwkv::ErrorCode::io) == RWKV_ERR_IO && int(rwkv::ErrorCode::format) == RWKV_ERR_FORMAT &&
              int(rwkv::ErrorCode::model) == RWKV_ERR_MODEL && int(rwkv::ErrorCode::backend) == RWKV_ERR_BACKEND &&
              int(rwkv::ErrorCode::argument) == RWKV_ERR_ARGUMENT && int(rwkv::ErrorCode::state) == RWKV_ERR_STATE &&
              int(rwkv::ErrorCode::unsupported) == RWKV_ERR_UNSUPPORTED);

struct rwkv_model {
  std::unique_ptr<rwkv::Engine> engine;
  int n_slots = 0;
  std::string backend_name, device_name;
  std::mutex mutex;  // the engine and its backend are not thread-safe
};

struct rwkv_sampler {
  rwkv::Sampler sampler;
};

namespace {

thread_local std::string last_error;

rwkv_status report(rwkv_status status, const char* function, std::string_view message) noexcept {
  try {
    last_error.assign(function).append(": ").append(message);
  } catch (...) {
    last_error.clear();  // no memory even for the message; the status still tells
  }
  return status;
}

rwkv_status status_of(rwkv::ErrorCode code) {
  const int value = int(code);
  return value >= RWKV_ERR_IO && value <= RWKV_ERR_UNSUPPORTED ? rwkv_status(value) : RWKV_ERR_INTERNAL;
}

// Runs body (returning rwkv_status) and maps every exception to a status + message.
template <class Body>
rwkv_status guarded(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (const rwkv::Error& e) {
    return report(status_of(e.code()), function, e.what());
  } catch (const std::bad_alloc&) {
    return report(RWKV_ERR_OUT_OF_MEMORY, function, "out of memory");
  } catch (const std::exception& e) {
    return report(RWKV_ERR_INTERNAL, function, e.what());
  } catch (...) {
    return report(RWKV_ERR_INTERNAL, function, "unknown exception");
  }
}

[[noreturn]] void bad_argument(const std::string& message) { rwkv::fail(rwkv::ErrorCode::argument, message); }

void require(bool ok, const char* what) {
  if (!ok) bad_argument(what);
}

void check_slot(const rwkv_model* model, int32_t slot, const char* name) {
  if (slot < 0 || slot >= model->n_slots)
    bad_argument(std::string(name) + " " + std::to_string(slot) + " is outside [0, " + std::to_string(model->n_slots) +
                 ")");
}

void check_tokens(const rwkv_model* model, const int32_t* tokens, size_t n) {
  const int32_t n_vocab = model->engine->n_vocab();
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= n_vocab)
      bad_argument("tokens[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) + " is outside [0, " +
                   std::to_string(n_vocab) + ")");
}

// Copies the caller's struct over the defaults: only the struct_size bytes it knows of.
template <class Params>
Params merge_params(const Params* given, Params defaults, const char* type_name) {
  if (!given) return defaults;
  const size_t given_size = given->struct_size;
  if (given_size < sizeof(size_t) || given_size > (size_t(1) << 16))
    bad_argument(std::string(type_name) + ".struct_size is " + std::to_string(given_size) +
                 ": start from the *_default_params() function");
  std::memcpy(static_cast<void*>(&defaults), given, std::min(given_size, sizeof(Params)));
  defaults.struct_size = sizeof(Params);
  return defaults;
}

}  // namespace

extern "C" {

uint32_t rwkv_api_version(void) { return RWKV_API_VERSION; }

const char* rwkv_status_name(rwkv_status status) {
  switch (status) {
    case RWKV_OK:
      return "ok";
    case RWKV_ERR_IO:
      return "io";
    case RWKV_ERR_FORMAT:
      return "format";
    case RWKV_ERR_MODEL:
      return "model";
    case RWKV_ERR_BACKEND:
      return "backend";
    case RWKV_ERR_ARGUMENT:
      return "argument";
    case RWKV_ERR_STATE:
      return "state";
    case RWKV_ERR_UNSUPPORTED:
      return "unsupported";
    case RWKV_ERR_BUFFER_TOO_SMALL:
      return "buffer_too_small";
    case RWKV_ERR_OUT_OF_MEMORY:
      return "out_of_memory";
    case RWKV_ERR_INTERNAL:
      return "internal";
  }
  return "unknown";
}

const char* rwkv_last_error(void) { return last_error.c_str(); }

rwkv_model_params rwkv_model_default_params(void) {
  rwkv_model_params p;
  std::memset(&p, 0, sizeof(p));
  p.struct_size = sizeof(p);
  p.backend = "auto";
  p.n_threads = 0;
  p.device = -1;
  p.n_slots = 1;
  return p;
}

rwkv_status rwkv_model_load(const char* path, const rwkv_model_params* params, rwkv_model** out_model) {
  if (out_model) *out_model = nullptr;
  return guarded(__func__, [&] {
    require(path != nullptr, "path is NULL");
    require(out_model != nullptr, "out_model is NULL");
    const rwkv_model_params p = merge_params(params, rwkv_model_default_params(), "rwkv_model_params");
    if (p.n_slots < 1) bad_argument("n_slots is " + std::to_string(p.n_slots) + ", must be >= 1");
    if (p.n_threads < 0) bad_argument("n_threads is " + std::to_string(p.n_threads) + ", must be >= 0");
    rwkv::EngineOptions options;
    options.backend = p.backend ? p.backend : "auto";
    options.backend_options.n_threads = p.n_threads;
    options.backend_options.device = p.device;
    options.n_slots = p.n_slots;
    if (p.progress) {
      options.progress = [fn = p.progress, user = p.progress_user_data](size_t done, size_t total) {
        fn(done, total, user);
      };
    }
    auto model = std::make_unique<rwkv_model>();
    model->engine = rwkv::Engine::open(path, options);
    model->n_slots = p.n_slots;
    model->backend_name = model->engine->backend().name();
    model->device_name = model->engine->backend().device_name();
    *out_model = model.release();
    return RWKV_OK;
  });
}

void rwkv_model_free(rwkv_model* model) { delete model; }

rwkv_status rwkv_model_info(const rwkv_model* model, rwkv_info* out) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(out != nullptr, "out is NULL");
    const rwkv::Hparams& hp = model->engine->hparams();
    out->n_embd = hp.n_embd;
    out->n_layer = hp.n_layer;
    out->n_vocab = hp.n_vocab;
    out->head_size = hp.head_size;
    out->n_head = hp.n_head;
    out->n_ffn = hp.n_ffn;
    out->n_slots = model->n_slots;
    out->state_size = hp.state_floats();
    out->backend = model->backend_name.c_str();
    out->device = model->device_name.c_str();
    return RWKV_OK;
  });
}

rwkv_status rwkv_tokenize(const rwkv_model* model, const char* text, int32_t* ids, size_t cap, size_t* n_ids) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(text != nullptr, "text is NULL");
    require(n_ids != nullptr, "n_ids is NULL");
    require(ids != nullptr || cap == 0, "ids is NULL but cap is not 0");
    const std::vector<int32_t> tokens = model->engine->tokenizer().encode(text);
    *n_ids = tokens.size();
    if (cap < tokens.size())
      return report(RWKV_ERR_BUFFER_TOO_SMALL, __func__,
                    "the text has " + std::to_string(tokens.size()) + " tokens, cap is " + std::to_string(cap));
    std::copy(tokens.begin(), tokens.end(), ids);
    return RWKV_OK;
  });
}

rwkv_status rwkv_detokenize(const rwkv_model* model, const int32_t* ids, size_t n_ids, char* text, size_t cap,
                            size_t* len) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(ids != nullptr || n_ids == 0, "ids is NULL");
    require(len != nullptr, "len is NULL");
    require(text != nullptr || cap == 0, "text is NULL but cap is not 0");
    const std::string bytes = model->engine->tokenizer().decode(std::vector<int32_t>(ids, ids + n_ids));
    *len = bytes.size();
    if (cap < bytes.size() + 1)
      return report(
          RWKV_ERR_BUFFER_TOO_SMALL, __func__,
          "the text needs " + std::to_string(bytes.size() + 1) + " bytes with its NUL, cap is " + std::to_string(cap));
    std::memcpy(text, bytes.data(), bytes.size());
    text[bytes.size()] = '\0';
    return RWKV_OK;
  });
}

rwkv_status rwkv_eval(rwkv_model* model, int32_t slot, const int32_t* tokens, size_t n_tokens, float* logits) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(tokens != nullptr, "tokens is NULL");
    require(n_tokens > 0, "n_tokens is 0");
    check_slot(model, slot, "slot");
    check_tokens(model, tokens, n_tokens);
    std::lock_guard lock(model->mutex);
    model->engine->feed(slot, {tokens, n_tokens}, logits);
    return RWKV_OK;
  });
}

rwkv_status rwkv_eval_all(rwkv_model* model, int32_t slot, const int32_t* tokens, size_t n_tokens, float* logits) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(tokens != nullptr, "tokens is NULL");
    require(logits != nullptr, "logits is NULL");
    require(n_tokens > 0, "n_tokens is 0");
    check_slot(model, slot, "slot");
    check_tokens(model, tokens, n_tokens);
    std::lock_guard lock(model->mutex);
    const std::vector<float> all = model->engine->feed_all(slot, {tokens, n_tokens});
    std::copy(all.begin(), all.end(), logits);
    return RWKV_OK;
  });
}

rwkv_status rwkv_decode_batch(rwkv_model* model, const int32_t* slots, const int32_t* tokens, size_t n, float* logits) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(slots != nullptr && tokens != nullptr, "slots or tokens is NULL");
    require(n > 0, "n is 0");
    std::vector<int> slot_list(n);
    std::vector<bool> used(size_t(model->n_slots), false);
    for (size_t i = 0; i < n; ++i) {
      check_slot(model, slots[i], ("slots[" + std::to_string(i) + "]").c_str());
      if (used[size_t(slots[i])]) bad_argument("slot " + std::to_string(slots[i]) + " appears twice in slots");
      used[size_t(slots[i])] = true;
      slot_list[i] = slots[i];
    }
    check_tokens(model, tokens, n);
    std::lock_guard lock(model->mutex);
    model->engine->decode(slot_list, {tokens, n}, logits ? logits : model->engine->logits_buffer(n).data());
    return RWKV_OK;
  });
}

rwkv_status rwkv_logits_buffer(rwkv_model* model, size_t rows, float** out) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(out != nullptr, "out is NULL");
    require(rows > 0, "rows is 0");
    std::lock_guard lock(model->mutex);
    *out = model->engine->logits_buffer(rows).data();
    return RWKV_OK;
  });
}

size_t rwkv_state_size(const rwkv_model* model) { return model ? model->engine->hparams().state_floats() : 0; }

rwkv_status rwkv_state_get(rwkv_model* model, int32_t slot, float* out, size_t n) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(out != nullptr, "out is NULL");
    check_slot(model, slot, "slot");
    const size_t size = model->engine->hparams().state_floats();
    if (n != size) bad_argument("n is " + std::to_string(n) + ", the state has " + std::to_string(size) + " floats");
    std::lock_guard lock(model->mutex);
    const std::vector<float> state = model->engine->get_state(slot);
    std::copy(state.begin(), state.end(), out);
    return RWKV_OK;
  });
}

rwkv_status rwkv_state_set(rwkv_model* model, int32_t slot, const float* in, size_t n) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(in != nullptr, "in is NULL");
    check_slot(model, slot, "slot");
    const size_t size = model->engine->hparams().state_floats();
    if (n != size) bad_argument("n is " + std::to_string(n) + ", the state has " + std::to_string(size) + " floats");
    std::lock_guard lock(model->mutex);
    model->engine->set_state(slot, {in, n});
    return RWKV_OK;
  });
}

rwkv_status rwkv_state_save(rwkv_model* model, int32_t slot, const char* path) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(path != nullptr, "path is NULL");
    check_slot(model, slot, "slot");
    std::lock_guard lock(model->mutex);
    model->engine->save_state(slot, path);
    return RWKV_OK;
  });
}

rwkv_status rwkv_state_load(rwkv_model* model, int32_t slot, const char* path) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    require(path != nullptr, "path is NULL");
    check_slot(model, slot, "slot");
    std::lock_guard lock(model->mutex);
    model->engine->load_state(slot, path);
    return RWKV_OK;
  });
}

rwkv_status rwkv_state_clone(rwkv_model* model, int32_t from, int32_t to) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    check_slot(model, from, "from");
    check_slot(model, to, "to");
    std::lock_guard lock(model->mutex);
    if (from != to) model->engine->clone_state(from, to);
    return RWKV_OK;
  });
}

rwkv_status rwkv_state_reset(rwkv_model* model, int32_t slot) {
  return guarded(__func__, [&] {
    require(model != nullptr, "model is NULL");
    check_slot(model, slot, "slot");
    std::lock_guard lock(model->mutex);
    model->engine->reset(slot);
    return RWKV_OK;
  });
}

rwkv_sampler_params rwkv_sampler_default_params(void) {
  const rwkv::SamplerParams d;
  rwkv_sampler_params p;
  std::memset(&p, 0, sizeof(p));
  p.struct_size = sizeof(p);
  p.temperature = d.temperature;
  p.top_k = d.top_k;
  p.top_p = d.top_p;
  p.min_p = d.min_p;
  p.presence_penalty = d.presence_penalty;
  p.frequency_penalty = d.frequency_penalty;
  p.penalty_decay = d.penalty_decay;
  p.seed = d.seed;
  return p;
}

rwkv_status rwkv_sampler_new(const rwkv_sampler_params* params, rwkv_sampler** out_sampler) {
  if (out_sampler) *out_sampler = nullptr;
  return guarded(__func__, [&] {
    require(out_sampler != nullptr, "out_sampler is NULL");
    const rwkv_sampler_params p = merge_params(params, rwkv_sampler_default_params(), "rwkv_sampler_params");
    auto in_unit = [](float v) { return v >= 0.0f && v <= 1.0f; };  // false for NaN too
    auto finite = [](float v) { return v - v == 0.0f; };
    if (p.temperature != p.temperature) bad_argument("temperature is NaN");
    if (p.top_k < 0) bad_argument("top_k is " + std::to_string(p.top_k) + ", must be >= 0");
    if (!in_unit(p.top_p)) bad_argument("top_p is " + std::to_string(p.top_p) + ", must be in [0, 1]");
    if (!in_unit(p.min_p)) bad_argument("min_p is " + std::to_string(p.min_p) + ", must be in [0, 1]");
    if (!in_unit(p.penalty_decay))
      bad_argument("penalty_decay is " + std::to_string(p.penalty_decay) + ", must be in [0, 1]");
    if (!finite(p.presence_penalty) || !finite(p.frequency_penalty)) bad_argument("penalties must be finite");
    rwkv::SamplerParams sp;
    sp.temperature = p.temperature;
    sp.top_k = p.top_k;
    sp.top_p = p.top_p;
    sp.min_p = p.min_p;
    sp.presence_penalty = p.presence_penalty;
    sp.frequency_penalty = p.frequency_penalty;
    sp.penalty_decay = p.penalty_decay;
    sp.seed = p.seed;
    *out_sampler = new rwkv_sampler{rwkv::Sampler(sp)};
    return RWKV_OK;
  });
}

rwkv_status rwkv_sampler_sample(rwkv_sampler* sampler, const float* logits, int32_t n_vocab, int32_t* out_token) {
  return guarded(__func__, [&] {
    require(sampler != nullptr, "sampler is NULL");
    require(logits != nullptr, "logits is NULL");
    require(out_token != nullptr, "out_token is NULL");
    *out_token = sampler->sampler.sample(logits, n_vocab);
    return RWKV_OK;
  });
}

rwkv_status rwkv_sampler_accept(rwkv_sampler* sampler, int32_t token) {
  return guarded(__func__, [&] {
    require(sampler != nullptr, "sampler is NULL");
    if (token < 0) bad_argument("token is " + std::to_string(token) + ", must be >= 0");
    sampler->sampler.accept(token);
    return RWKV_OK;
  });
}

rwkv_status rwkv_sampler_reset(rwkv_sampler* sampler) {
  return guarded(__func__, [&] {
    require(sampler != nullptr, "sampler is NULL");
    sampler->sampler.reset();
    return RWKV_OK;
  });
}

void rwkv_sampler_free(rwkv_sampler* sampler) { delete sampler; }

}  // extern "C"
