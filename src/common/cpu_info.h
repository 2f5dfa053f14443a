// The host CPU's model name, for tables and logs.
#pragma once

#include <string>

namespace rwkv {
std::string cpu_model_name();
}
