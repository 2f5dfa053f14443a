// The OpenAI-compatible request and response bodies of `rwkv serve`: parsing and checking
// /v1/completions and /v1/chat/completions requests into CompletionRequests, and building
// the JSON answers (whole or as server-sent-event chunks).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "server_scheduler.h"
#include "tokenizer/tokenizer.h"

namespace rwkv::serve {

// A request that cannot be served as asked: the HTTP status, OpenAI's error type and the
// offending field ("messages[1].content"; empty when none).
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string param, const std::string& message)
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string type_, param_;
};

enum class Endpoint { completion, chat };

struct ApiLimits {
  int32_t n_vocab = 0;           // token ids in a prompt array must be below this
  int max_tokens_limit = 4096;   // largest max_tokens accepted
  int default_max_tokens = 256;  // when the request gives none
};

struct ParsedRequest {
  CompletionRequest completion;
  bool stream = false;
};

// Parses a request body. Sampling fields absent (or null) take SamplerParams' defaults,
// except the seed, which is random unless given. Throws ApiError(400) naming the field.
ParsedRequest parse_request(Endpoint endpoint, const std::string& body, const Tokenizer& tokenizer,
                            const ApiLimits& limits);

// The RWKV chat prompt for OpenAI messages: "System: ...\n\nUser: ...\n\nAssistant:".
// Message texts are cleaned (CRLF -> LF, blank lines collapsed, trimmed) so that "\n\n"
// only separates turns. Throws ApiError(400) naming the message at fault.
std::string chat_prompt(const nlohmann::json& messages);

// What every answer of one request shares.
struct ResponseMeta {
  Endpoint endpoint = Endpoint::completion;
  std::string id;       // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// {"error": {"message", "type", "param", "code"}}.
nlohmann::json error_body(const std::string& message, const std::string& type, const std::string& param = "");
// The whole answer of a finished request (finish_reason "stop" or "length").
nlohmann::json completion_body(const ResponseMeta& meta, const std::string& text, const CompletionOutcome& outcome);
// One streamed chunk: `text` as the choice's text (completion) or delta content (chat);
// finish_reason empty for null. A chat stream starts with role_chunk().
nlohmann::json stream_chunk(const ResponseMeta& meta, const std::string& text, const std::string& finish_reason);
nlohmann::json role_chunk(const ResponseMeta& meta);
// Compact JSON text. A model can write bytes that are not UTF-8 (StreamDecoder passes them
// on); they become U+FFFD instead of failing the answer.
std::string dump(const nlohmann::json& data);
// "data: {json}\n\n".
std::string sse_event(const nlohmann::json& data);

}  // namespace rwkv::serve
