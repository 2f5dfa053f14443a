// rwkv quantize: re-encodes an RWKV-7 GGUF the way llama-quantize does for this architecture
// (spec §3.4). Only the embedding, the head and the six big matrices per layer change type;
// every other tensor and all metadata are copied as they are.
#include <cctype>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "common.h"
#include "common/error.h"
#include "common/threadpool.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tensor/quant.h"

namespace rwkv::cli {

namespace {

struct QuantizeArgs {
  std::string in, out, type;
  int threads = 0;
  bool pure = false;
};

// A target as llama-quantize names it: the main type and the type output.weight gets.
struct Target {
  const char* name;
  TensorType main, output;
};

constexpr Target kTargets[] = {
    {"f32", TensorType::F32, TensorType::F32},    {"f16", TensorType::F16, TensorType::F16},
    {"bf16", TensorType::BF16, TensorType::BF16}, {"q8_0", TensorType::Q8_0, TensorType::Q8_0},
    {"q4_0", TensorType::Q4_0, TensorType::Q6_K}, {"q4_1", TensorType::Q4_1, TensorType::Q6_K},
    {"q5_0", TensorType::Q5_0, TensorType::Q6_K}, {"q5_1", TensorType::Q5_1, TensorType::Q6_K},
    {"q4_k", TensorType::Q4_K, TensorType::Q6_K}, {"q4_k_m", TensorType::Q4_K, TensorType::Q6_K},
    {"q5_k", TensorType::Q5_K, TensorType::Q6_K}, {"q5_k_m", TensorType::Q5_K, TensorType::Q6_K},
    {"q6_k", TensorType::Q6_K, TensorType::Q6_K},
};

const Target& find_target(const std::string& name) {
  std::string lower = name, known;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const Target& t : kTargets) {
    if (lower == t.name) return t;
    known += (known.empty() ? "" : ", ") + std::string(t.name);
  }
  throw UsageError("unknown type '" + name + "' (known: " + known + ")");
}

// The tensors llama-quantize re-encodes for rwkv7; everything else keeps its type.
bool is_quantised_tensor(const std::string& name) {
  if (name == "token_embd.weight" || name == "output.weight") return true;
  // blk.<digits>.<matrix>.weight
  if (name.rfind("blk.", 0) != 0) return false;
  size_t p = 4;
  while (p < name.size() && std::isdigit(static_cast<unsigned char>(name[p]))) ++p;
  if (p == 4 || p >= name.size() || name[p] != '.') return false;
  const std::string rest = name.substr(p + 1);
  for (const char* m : {"time_mix_receptance", "time_mix_key", "time_mix_value", "time_mix_output", "channel_mix_key",
                        "channel_mix_value"})
    if (rest == std::string(m) + ".weight") return true;
  return false;
}

// llama.cpp's fall-back when a row is not a whole number of 256-element k-quant blocks.
TensorType fallback_type(TensorType t) {
  switch (t) {
    case TensorType::Q4_K:
      return TensorType::Q5_0;
    case TensorType::Q5_K:
      return TensorType::Q5_1;
    case TensorType::Q6_K:
      return TensorType::Q8_0;
    default:
      return t;
  }
}

bool fits(TensorType t, int64_t cols) { return cols % type_info(t).block_size == 0; }

// Re-encodes a [rows x cols] tensor of type `from` as `to`, rows spread over the pool.
std::vector<uint8_t> convert(const gguf::TensorInfo& t, TensorType to, ThreadPool& pool) {
  const int64_t cols = t.ne[0], rows = t.n_elements() / cols;
  const size_t in_stride = row_bytes(t.type, cols), out_stride = row_bytes(to, cols);
  std::vector<uint8_t> out(out_stride * size_t(rows));
  pool.parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_row(t.type, t.data + size_t(r) * in_stride, row.data(), cols);
      quantize_row(to, row.data(), out.data() + size_t(r) * out_stride, cols);
    }
  });
  return out;
}

void run_quantize(const QuantizeArgs& args) {
  const Target& target = find_target(args.type);
  std::error_code ec;
  if (std::filesystem::equivalent(args.in, args.out, ec)) throw UsageError("the output would overwrite the input");
  const auto model = Model::load(args.in);  // validates that this is an RWKV-7 model
  const gguf::File& in = model->file();

  gguf::Writer w;
  for (const gguf::KeyValue& kv : in.metadata())
    if (kv.key != "general.file_type" && kv.key != "general.quantization_version") w.copy_value(kv.key, kv.value);
  w.set_u32("general.file_type", llama_file_type(target.main));
  w.set_u32("general.quantization_version", 2);

  ThreadPool pool(args.threads);
  const size_t n = in.tensors().size();
  uint64_t bytes_in = 0, bytes_out = 0;
  for (size_t i = 0; i < n; ++i) {
    const gguf::TensorInfo& t = in.tensors()[i];
    TensorType to = t.type;
    std::string note;
    if (is_quantised_tensor(t.name)) {
      to = t.name == "output.weight" && !args.pure ? target.output : target.main;
      if (!fits(to, t.ne[0])) {
        const TensorType alt = fallback_type(to);
        note = "  (rows of " + std::to_string(t.ne[0]) + " do not fit " + std::string(type_name(to)) + " blocks";
        to = fits(alt, t.ne[0]) ? alt : t.type;
        note += ": " + std::string(type_name(to)) + ")";
      }
    }
    std::vector<uint8_t> data = to == t.type ? std::vector<uint8_t>(t.data, t.data + t.nbytes) : convert(t, to, pool);
    const std::vector<int64_t> ne(t.ne, t.ne + std::max<uint32_t>(t.n_dims, 1));
    std::printf("[%4zu/%zu] %-36s %-6s -> %-6s %11s -> %11s%s\n", i + 1, n, t.name.c_str(),
                std::string(type_name(t.type)).c_str(), std::string(type_name(to)).c_str(),
                format_bytes(double(t.nbytes)).c_str(), format_bytes(double(data.size())).c_str(), note.c_str());
    std::fflush(stdout);
    bytes_in += t.nbytes;
    bytes_out += data.size();
    w.add_tensor(t.name, to, ne, data.data(), data.size());
  }
  w.write(args.out);
  Model::load(args.out);  // the result must load like any model
  std::printf("%s: %s -> %s (%s)\n", args.out.c_str(), format_bytes(double(bytes_in)).c_str(),
              format_bytes(double(bytes_out)).c_str(), target.name);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto args = std::make_shared<QuantizeArgs>();
  std::string names;
  for (const Target& t : kTargets) names += (names.empty() ? "" : ", ") + std::string(t.name);
  CLI::App* cmd = app.add_subcommand("quantize", "Re-encode an RWKV-7 GGUF's large matrices (like llama-quantize)");
  cmd->add_option("input", args->in, "Input .gguf")->required();
  cmd->add_option("output", args->out, "Output .gguf")->required();
  cmd->add_option("type", args->type, "Target: " + names)->required();
  cmd->add_option("-t,--threads", args->threads, "Threads (0: all hardware threads)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--pure", args->pure, "Give output.weight the target type too (default: q6_K for 4/5-bit targets)");
  cmd->footer(
      "Re-encoded: token_embd, output and per layer time_mix_{receptance,key,value,output}, channel_mix_{key,value}. "
      "A k-quant whose 256-element blocks do not divide a row falls back to q5_0 / q5_1 / q8_0.");
  cmd->callback([args] { run_quantize(*args); });
}

}  // namespace rwkv::cli
