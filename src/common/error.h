// Errors of the library. Every failure is an rwkv::Error carrying a code (mirrored in the
// C API) and a message that names the file, tensor, field or request at fault.
#pragma once

#include <stdexcept>
#include <string>

namespace rwkv {

enum class ErrorCode : int {
  ok = 0,
  io = 1,          // a file could not be opened, read, mapped or written
  format = 2,      // a GGUF or state file is malformed
  model = 3,       // a well-formed file that is not a usable RWKV-7 model
  backend = 4,     // a backend could not start or failed on its device
  argument = 5,    // a bad argument from the caller
  state = 6,       // a state file that does not belong to this model
  unsupported = 7  // a valid request for something this build cannot do
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace rwkv
