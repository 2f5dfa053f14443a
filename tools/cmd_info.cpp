// rwkv info: what a model file holds: hyper-parameters, tensor types and sizes, state size,
// metadata. The file is fully validated (Model::load) first.
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common.h"
#include "gguf/gguf.h"
#include "model/model.h"

namespace rwkv::cli {

namespace {

struct InfoArgs {
  ModelArgs model;
  bool tensors = false;
  bool metadata = false;
  std::string format = "text";
};

std::vector<int64_t> shape_of(const gguf::TensorInfo& t) { return {t.ne, t.ne + std::max<uint32_t>(t.n_dims, 1)}; }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "{";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "}";
}

// A metadata value as JSON; long arrays are summarised (the vocabulary alone has 65536
// entries).
nlohmann::json value_json(const gguf::Value& v, bool full_arrays) {
  using gguf::ValueType;
  if (v.type == ValueType::string) return v.string;
  if (v.type == ValueType::boolean) return v.integer != 0;
  if (v.is_integer()) return v.integer;
  if (v.is_real()) return v.real;
  constexpr size_t kShown = 8;
  if (!full_arrays && v.array_size > kShown)
    return std::string("[") + std::string(gguf::value_type_name(v.array_type)) + " x " + std::to_string(v.array_size) +
           "]";
  if (!v.strings.empty()) return v.strings;
  if (!v.integers.empty()) return v.integers;
  if (!v.reals.empty()) return v.reals;
  return nlohmann::json::array();
}

nlohmann::json describe(const Model& m, const InfoArgs& args) {
  const Hparams& hp = m.hparams();
  const gguf::File& f = m.file();
  nlohmann::json j;
  j["file"] = m.path();
  j["file_bytes"] = f.file_size();
  j["gguf_version"] = f.version();
  j["alignment"] = f.alignment();
  j["architecture"] = f.get_string_or("general.architecture", "");
  j["name"] = f.get_string_or("general.name", "");
  j["file_type"] = f.get_int_or("general.file_type", -1);
  j["hparams"] = {{"n_embd", hp.n_embd}, {"n_layer", hp.n_layer}, {"head_size", hp.head_size}, {"n_head", hp.n_head},
                  {"n_ffn", hp.n_ffn},   {"n_vocab", hp.n_vocab}, {"rank_w", hp.rank_w},       {"rank_a", hp.rank_a},
                  {"rank_v", hp.rank_v}, {"rank_g", hp.rank_g},   {"ln_eps", hp.ln_eps},       {"gn_eps", hp.gn_eps}};
  std::map<std::string, std::pair<int64_t, uint64_t>> per_type;  // type -> (count, bytes)
  int64_t n_params = 0;
  uint64_t total = 0;
  nlohmann::json tensors = nlohmann::json::array();
  for (const gguf::TensorInfo& t : f.tensors()) {
    auto& [count, bytes] = per_type[std::string(type_name(t.type))];
    ++count;
    bytes += t.nbytes;
    n_params += t.n_elements();
    total += t.nbytes;
    if (args.tensors)
      tensors.push_back({{"name", t.name}, {"type", type_name(t.type)}, {"shape", shape_of(t)}, {"bytes", t.nbytes}});
  }
  j["n_tensors"] = f.tensors().size();
  j["n_params"] = n_params;
  j["tensor_bytes"] = total;
  for (const auto& [type, cb] : per_type) j["types"][type] = {{"count", cb.first}, {"bytes", cb.second}};
  j["state_bytes_per_sequence"] = hp.state_floats() * sizeof(float);
  if (args.tensors) j["tensors"] = tensors;
  if (args.metadata) {
    j["metadata"] = nlohmann::json::object();
    for (const gguf::KeyValue& kv : f.metadata()) j["metadata"][kv.key] = value_json(kv.value, args.format == "json");
  }
  return j;
}

void print_text(const nlohmann::json& j) {
  const auto& hp = j["hparams"];
  std::printf("file:         %s (%s, GGUF v%d, alignment %d)\n", j["file"].get<std::string>().c_str(),
              format_bytes(j["file_bytes"].get<double>()).c_str(), j["gguf_version"].get<int>(),
              j["alignment"].get<int>());
  std::printf("architecture: %s  name: %s  file_type: %d\n", j["architecture"].get<std::string>().c_str(),
              j["name"].get<std::string>().c_str(), j["file_type"].get<int>());
  std::printf("dimensions:   n_embd %d, n_layer %d, head_size %d (%d heads), n_ffn %d, n_vocab %d\n",
              hp["n_embd"].get<int>(), hp["n_layer"].get<int>(), hp["head_size"].get<int>(), hp["n_head"].get<int>(),
              hp["n_ffn"].get<int>(), hp["n_vocab"].get<int>());
  std::printf("lora ranks:   decay %d, iclr %d, value %d, gate %d\n", hp["rank_w"].get<int>(), hp["rank_a"].get<int>(),
              hp["rank_v"].get<int>(), hp["rank_g"].get<int>());
  std::printf("norm eps:     layer norm %g, group norm %g\n", hp["ln_eps"].get<double>(), hp["gn_eps"].get<double>());
  std::printf("parameters:   %s in %d tensors, %s\n", format_count(j["n_params"].get<double>()).c_str(),
              j["n_tensors"].get<int>(), format_bytes(j["tensor_bytes"].get<double>()).c_str());
  for (const auto& [type, cb] : j["types"].items())
    std::printf("  %-6s %4d tensors  %s\n", type.c_str(), cb["count"].get<int>(),
                format_bytes(cb["bytes"].get<double>()).c_str());
  std::printf("state:        %s per sequence\n", format_bytes(j["state_bytes_per_sequence"].get<double>()).c_str());
  if (j.contains("tensors")) {
    std::printf("\n%-40s %-6s %-22s %12s\n", "tensor", "type", "shape", "bytes");
    for (const auto& t : j["tensors"])
      std::printf("%-40s %-6s %-22s %12llu\n", t["name"].get<std::string>().c_str(),
                  t["type"].get<std::string>().c_str(), shape_string(t["shape"].get<std::vector<int64_t>>()).c_str(),
                  static_cast<unsigned long long>(t["bytes"].get<uint64_t>()));
  }
  if (j.contains("metadata")) {
    std::printf("\nmetadata:\n");
    for (const auto& [key, value] : j["metadata"].items())
      std::printf("  %-48s %s\n", key.c_str(),
                  value.is_string() ? value.get<std::string>().c_str()
                                    : value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
}

void run_info(const InfoArgs& args) {
  const auto model = Model::load(resolve_model(args.model.model));
  const nlohmann::json j = describe(*model, args);
  if (args.format == "json")
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  else
    print_text(j);
}

}  // namespace

void register_info(CLI::App& app) {
  auto args = std::make_shared<InfoArgs>();
  CLI::App* cmd = app.add_subcommand("info", "Show a model's hyper-parameters, tensor types and sizes");
  add_model_option(*cmd, args->model);
  cmd->add_flag("--tensors", args->tensors, "List every tensor (name, type, shape, bytes)");
  cmd->add_flag("--metadata", args->metadata, "List the GGUF metadata (long arrays summarised in text output)");
  cmd->add_option("-o,--output", args->format, "Output format")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  cmd->callback([args] { run_info(*args); });
}

}  // namespace rwkv::cli
