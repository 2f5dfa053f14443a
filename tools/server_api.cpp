#include "server_api.h"

#include <cmath>
#include <random>

#include "common/error.h"

namespace rwkv::serve {

namespace {

using nlohmann::json;

ApiError bad_field(const std::string& field, const std::string& message) {
  return ApiError(400, "invalid_request_error", field, field + " " + message);
}

// Typed access to the fields of one JSON object. A field that is absent or null takes the
// fallback; a present field of the wrong type or out of range is an ApiError naming it.
class Fields {
 public:
  explicit Fields(const json& object) : object_(object) {}

  const json* find(const char* name) const {
    const auto it = object_.find(name);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  double number(const char* name, double fallback, double lo, double hi) const {
    const json* v = find(name);
    if (!v) return fallback;
    if (!v->is_number()) throw bad_field(name, "must be a number");
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi))
      throw bad_field(name, "must be in [" + format(lo) + ", " + format(hi) + "], got " + format(x));
    return x;
  }

  int64_t integer(const char* name, int64_t fallback, int64_t lo, int64_t hi) const {
    const json* v = find(name);
    if (!v) return fallback;
    if (!v->is_number_integer()) throw bad_field(name, "must be an integer");
    // Non-negative integers parse as unsigned and may not fit int64_t.
    const bool in_range = v->is_number_unsigned()
                              ? v->get<uint64_t>() <= uint64_t(hi) && int64_t(v->get<uint64_t>()) >= lo
                              : v->get<int64_t>() >= lo && v->get<int64_t>() <= hi;
    if (!in_range)
      throw bad_field(name, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v->dump());
    return v->get<int64_t>();
  }

  bool boolean(const char* name, bool fallback) const {
    const json* v = find(name);
    if (!v) return fallback;
    if (!v->is_boolean()) throw bad_field(name, "must be true or false");
    return v->get<bool>();
  }

 private:
  static std::string format(double x) {
    json j = x;
    return j.dump();
  }
  const json& object_;
};

const char* const kChatSeparator = "\n\n";  // RWKV's turn separator, also the chat stop

// Message text as the model expects it: CRLF -> LF, runs of newlines collapsed, trimmed.
std::string clean_message(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
    if (text[i] == '\n' && !out.empty() && out.back() == '\n') continue;
    out += text[i];
  }
  const char* const blanks = " \t\r\n";
  const size_t first = out.find_first_not_of(blanks);
  if (first == std::string::npos) return "";
  return out.substr(first, out.find_last_not_of(blanks) - first + 1);
}

std::vector<int32_t> parse_prompt(const json& body, const Tokenizer& tokenizer, const ApiLimits& limits) {
  const json* prompt = Fields(body).find("prompt");
  if (!prompt) throw bad_field("prompt", "is required");
  const json* text = prompt->is_string() ? prompt : nullptr;
  // OpenAI also allows ["text"] and [id, id, ...].
  if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) text = &(*prompt)[0];
  std::vector<int32_t> ids;
  if (text) {
    try {
      ids = tokenizer.encode(text->get_ref<const std::string&>());
    } catch (const Error& e) {
      throw bad_field("prompt", std::string("cannot be tokenised: ") + e.what());
    }
  } else if (prompt->is_array()) {
    for (size_t i = 0; i < prompt->size(); ++i) {
      const json& id = (*prompt)[i];
      const std::string name = "prompt[" + std::to_string(i) + "]";
      if (!id.is_number_integer())
        throw bad_field(name, "must be a token id (the prompt is a string or an array of ids)");
      if (id.get<int64_t>() < 0 || id.get<int64_t>() >= limits.n_vocab)
        throw bad_field(name,
                        "is " + id.dump() + ", outside the vocabulary [0, " + std::to_string(limits.n_vocab) + ")");
      ids.push_back(id.get<int32_t>());
    }
  } else {
    throw bad_field("prompt", "must be a string or an array of token ids");
  }
  if (ids.empty()) throw bad_field("prompt", "must not be empty");
  return ids;
}

std::vector<std::string> parse_stop(const json& body) {
  const json* stop = Fields(body).find("stop");
  if (!stop) return {};
  if (stop->is_string()) {
    if (stop->get_ref<const std::string&>().empty()) throw bad_field("stop", "must not be empty");
    return {stop->get<std::string>()};
  }
  if (!stop->is_array()) throw bad_field("stop", "must be a string or an array of strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < stop->size(); ++i) {
    const std::string name = "stop[" + std::to_string(i) + "]";
    if (!(*stop)[i].is_string()) throw bad_field(name, "must be a string");
    if ((*stop)[i].get_ref<const std::string&>().empty()) throw bad_field(name, "must not be empty");
    out.push_back((*stop)[i].get<std::string>());
  }
  return out;
}

SamplerParams parse_sampling(const Fields& f) {
  const SamplerParams d;
  SamplerParams p;
  p.temperature = float(f.number("temperature", d.temperature, 0, 100));
  p.top_p = float(f.number("top_p", d.top_p, 0, 1));
  p.top_k = int(f.integer("top_k", d.top_k, 0, 1 << 30));
  p.min_p = float(f.number("min_p", d.min_p, 0, 1));
  p.presence_penalty = float(f.number("presence_penalty", d.presence_penalty, -2, 2));
  p.frequency_penalty = float(f.number("frequency_penalty", d.frequency_penalty, -2, 2));
  p.penalty_decay = float(f.number("penalty_decay", d.penalty_decay, 0, 1));
  if (f.find("seed")) {
    const json& seed = *f.find("seed");
    if (!seed.is_number_integer()) throw bad_field("seed", "must be an integer");
    p.seed = seed.is_number_unsigned() ? seed.get<uint64_t>() : uint64_t(seed.get<int64_t>());
  } else {
    p.seed = (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
  }
  return p;
}

}  // namespace

std::string chat_prompt(const json& messages) {
  if (!messages.is_array()) throw bad_field("messages", "must be an array");
  if (messages.empty()) throw bad_field("messages", "must not be empty");
  std::string prompt;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string name = "messages[" + std::to_string(i) + "]";
    const json& m = messages[i];
    if (!m.is_object()) throw bad_field(name, "must be an object");
    const json* role = Fields(m).find("role");
    if (!role) throw bad_field(name + ".role", "is required");
    if (!role->is_string()) throw bad_field(name + ".role", "must be a string");
    const std::string& r = role->get_ref<const std::string&>();
    const char* speaker = r == "system" || r == "developer" ? "System"
                          : r == "user"                     ? "User"
                          : r == "assistant"                ? "Assistant"
                                                            : nullptr;
    if (!speaker) throw bad_field(name + ".role", "must be system, user or assistant, got '" + r + "'");
    const json* content = Fields(m).find("content");
    if (!content) throw bad_field(name + ".content", "is required");
    if (!content->is_string()) throw bad_field(name + ".content", "must be a string");
    std::string text = content->get<std::string>();
    // Past answers keep only what follows their reasoning, as the G1 templates do.
    if (r == "assistant" && text.find("</think>") != std::string::npos)
      text.erase(0, text.find("</think>") + std::string("</think>").size());
    prompt += std::string(speaker) + ": " + clean_message(text) + kChatSeparator;
  }
  return prompt + "Assistant:";
}

ParsedRequest parse_request(Endpoint endpoint, const std::string& body, const Tokenizer& tokenizer,
                            const ApiLimits& limits) {
  json request;
  try {
    request = json::parse(body);
  } catch (const json::parse_error& e) {
    throw ApiError(400, "invalid_request_error", "", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!request.is_object()) throw ApiError(400, "invalid_request_error", "", "the body must be a JSON object");
  const Fields f(request);
  if (f.integer("n", 1, 1, 1) != 1) throw bad_field("n", "must be 1");
  if (f.boolean("echo", false)) throw bad_field("echo", "is not supported");
  // logprobs: false (chat) or 0 (completions) are the only values served.
  if (const json* lp = f.find("logprobs"); lp && !(*lp == false || *lp == 0))
    throw bad_field("logprobs", "is not supported");

  ParsedRequest out;
  CompletionRequest& c = out.completion;
  if (endpoint == Endpoint::chat) {
    const json* messages = f.find("messages");
    if (!messages) throw bad_field("messages", "is required");
    try {
      c.prompt = tokenizer.encode(chat_prompt(*messages));
    } catch (const Error& e) {
      throw bad_field("messages", std::string("cannot be tokenised: ") + e.what());
    }
    c.stop.push_back(kChatSeparator);
  } else {
    c.prompt = parse_prompt(request, tokenizer, limits);
  }
  const std::vector<std::string> stop = parse_stop(request);
  c.stop.insert(c.stop.end(), stop.begin(), stop.end());
  const char* max_name = f.find("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  c.max_tokens = int(f.integer(max_name, limits.default_max_tokens, 1, limits.max_tokens_limit));
  c.sampling = parse_sampling(f);
  out.stream = f.boolean("stream", false);
  return out;
}

json error_body(const std::string& message, const std::string& type, const std::string& param) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", nullptr}}}};
}

namespace {

json usage(const CompletionOutcome& o) {
  return {{"prompt_tokens", o.n_prompt},
          {"completion_tokens", o.n_generated},
          {"total_tokens", o.n_prompt + o.n_generated}};
}

json envelope(const ResponseMeta& meta, const char* object) {
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}};
}

json reason(const std::string& finish_reason) { return finish_reason.empty() ? json(nullptr) : json(finish_reason); }

}  // namespace

json completion_body(const ResponseMeta& meta, const std::string& text, const CompletionOutcome& outcome) {
  json body;
  if (meta.endpoint == Endpoint::chat) {
    body = envelope(meta, "chat.completion");
    body["choices"] = json::array({{{"index", 0},
                                    {"message", {{"role", "assistant"}, {"content", text}}},
                                    {"logprobs", nullptr},
                                    {"finish_reason", outcome.finish_reason}}});
  } else {
    body = envelope(meta, "text_completion");
    body["choices"] =
        json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", outcome.finish_reason}}});
  }
  body["usage"] = usage(outcome);
  return body;
}

json stream_chunk(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason) {
  if (meta.endpoint == Endpoint::chat) {
    json chunk = envelope(meta, "chat.completion.chunk");
    const json delta = text.empty() ? json::object() : json{{"content", text}};
    chunk["choices"] = json::array(
        {{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", reason(finish_reason)}}});
    return chunk;
  }
  json chunk = envelope(meta, "text_completion");
  chunk["choices"] =
      json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", reason(finish_reason)}}});
  return chunk;
}

json role_chunk(const ResponseMeta& meta) {
  json chunk = envelope(meta, "chat.completion.chunk");
  chunk["choices"] = json::array({{{"index", 0},
                                   {"delta", {{"role", "assistant"}, {"content", ""}}},
                                   {"logprobs", nullptr},
                                   {"finish_reason", nullptr}}});
  return chunk;
}

std::string dump(const json& data) { return data.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& data) { return "data: " + dump(data) + "\n\n"; }

}  // namespace rwkv::serve
