// The `rwkv` command, run as a user runs it: the built binary in a shell, from a scratch
// directory, with stdout, stderr and the exit code checked. Expected values come from the
// library (the same computation in-process) or from models/README.md.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/model.h"
#include "runtime/engine.h"
#include "runtime/perplexity.h"
#include "testing/testing.h"

namespace rwkv {
namespace {

namespace fs = std::filesystem;
using testing::demo_model_f16;
using testing::demo_model_q8_0;
using testing::source_path;
using testing::temp_path;

const std::string kBinary = RWKV_BINARY_DIR "/tools/rwkv";

struct Outcome {
  int exit_code = -1;
  std::string out, err;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `rwkv <args>` (args already shell-quoted) in a scratch directory with `input` on stdin.
Outcome rwkv(const std::string& args, const std::string& input = "") {
  static int counter = 0;
  const std::string base = temp_path("cli-" + std::to_string(counter++));
  const std::string cwd = temp_path("cwd");
  fs::create_directories(cwd);
  std::ofstream(base + ".in", std::ios::binary) << input;
  const std::string cmd = "cd " + quote(cwd) + " && " + quote(kBinary) + " " + args + " <" + quote(base + ".in") +
                          " >" + quote(base + ".out") + " 2>" + quote(base + ".err");
  const int status = std::system(cmd.c_str());
  Outcome r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_all(base + ".out");
  r.err = read_all(base + ".err");
  return r;
}

// The value after "key:" on its own line of `text`.
std::string field(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return line.substr(line.find_first_not_of(' ', key.size() + 1));
  return "";
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kBinary)) << kBinary << " is missing: build the rwkv_cli target first";
  }
  // The tests `rwkv bench ARGS -o json` reports; an empty array (and a failure) if it fails.
  static nlohmann::json bench_json(const std::string& args) {
    const Outcome r = rwkv("bench " + args + " -o json");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::array();
  }
};

TEST_F(Cli, TokenizeUsesTheDefaultModelFoundNextToTheExecutable) {
  // The scratch directory has no models/: the model must be found relative to the binary.
  const Outcome r = rwkv("tokenize 'The jury said'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "631 309 841 1313\n");  // models/README.md
}

TEST_F(Cli, TokenizeWithAVocabularyFileAgreesWithTheModel) {
  const Outcome from_vocab =
      rwkv("tokenize --vocab " + quote(source_path("models/demo_vocab.txt")) + " 'The jury said'");
  EXPECT_EQ(from_vocab.exit_code, 0) << from_vocab.err;
  EXPECT_EQ(from_vocab.out, "631 309 841 1313\n");
}

TEST_F(Cli, DetokenizeRoundTrips) {
  const std::string text = "Hello, world.\n\nUser: caf\xc3\xa9?";
  const Outcome ids = rwkv("tokenize " + quote(text));
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  const Outcome back = rwkv("detokenize " + ids.out.substr(0, ids.out.find('\n')));
  EXPECT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(back.out, text);
}

TEST_F(Cli, InfoMatchesTheModel) {
  const auto model = Model::load(demo_model_q8_0());
  const Outcome text = rwkv("info -m " + quote(demo_model_q8_0()));
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("n_embd " + std::to_string(model->hparams().n_embd)), std::string::npos) << text.out;

  const Outcome json = rwkv("info --tensors -o json -m " + quote(demo_model_q8_0()));
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto j = nlohmann::json::parse(json.out);
  EXPECT_EQ(j["hparams"]["n_layer"], model->hparams().n_layer);
  EXPECT_EQ(j["hparams"]["n_vocab"], model->hparams().n_vocab);
  EXPECT_EQ(j["n_tensors"], model->all_weights().size());
  EXPECT_EQ(j["tensor_bytes"], model->weight_bytes());
  EXPECT_EQ(j["state_bytes_per_sequence"], model->hparams().state_floats() * sizeof(float));
  ASSERT_EQ(j["tensors"].size(), model->all_weights().size());
  const auto& head = *std::find_if(j["tensors"].begin(), j["tensors"].end(),
                                   [](const nlohmann::json& t) { return t["name"] == "output.weight"; });
  EXPECT_EQ(head["type"], std::string(type_name(model->head.type)));
  EXPECT_EQ(head["bytes"], model->head.nbytes);
}

TEST_F(Cli, GreedyGenerationIsDeterministicAndStartsWithThePrompt) {
  const std::string args = "generate -p 'The jury said' -n 8 --greedy";
  const Outcome a = rwkv(args), b = rwkv(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out.rfind("The jury said", 0), 0u) << a.out;
  EXPECT_GT(a.out.size(), std::string("The jury said\n").size());
  EXPECT_NE(a.err.find("tok/s"), std::string::npos) << a.err;
}

TEST_F(Cli, SeededSamplingRepeats) {
  const std::string args = "generate -p 'The jury said' -n 12 --temp 1 --top-p 0.9 --seed 7";
  const Outcome a = rwkv(args), b = rwkv(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

TEST_F(Cli, LogitsWritesANpyFileWithTheEngineLogits) {
  const std::string out = temp_path("logits.npy");
  const Outcome r = rwkv("logits --backend cpu-ref --text 'The jury said' --out " + quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  EngineOptions options;
  options.backend = "cpu-ref";
  auto engine = Engine::open(demo_model_q8_0(), options);
  const std::vector<int32_t> ids = engine->tokenizer().encode("The jury said");
  const std::vector<float> expected = engine->feed_all(0, ids);

  const std::string npy = read_all(out);
  ASSERT_GT(npy.size(), 10u);
  EXPECT_EQ(npy.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = uint8_t(npy[8]) | size_t(uint8_t(npy[9])) << 8;
  EXPECT_EQ((10 + header_len) % 64, 0u);
  const std::string header = npy.substr(10, header_len);
  EXPECT_NE(header.find("'descr': '<f4'"), std::string::npos) << header;
  EXPECT_NE(header.find("'fortran_order': False"), std::string::npos) << header;
  EXPECT_NE(header.find("'shape': (" + std::to_string(ids.size()) + ", " + std::to_string(engine->n_vocab()) + ")"),
            std::string::npos)
      << header;
  ASSERT_EQ(npy.size(), 10 + header_len + expected.size() * sizeof(float));
  std::vector<float> got(expected.size());
  std::memcpy(got.data(), npy.data() + 10 + header_len, got.size() * sizeof(float));
  EXPECT_EQ(got, expected);  // same backend, same tokens: bit-identical
}

TEST_F(Cli, PerplexityAgreesWithTheLibrary) {
  const std::string text = read_all(source_path("models/heldout.txt")).substr(0, 4096);
  const std::string file = temp_path("heldout-4k.txt");
  std::ofstream(file, std::ios::binary) << text;
  const Outcome r = rwkv("perplexity --backend cpu -f " + quote(file));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const double nats = std::stod(field(r.out, "nats/token"));
  EXPECT_TRUE(std::isfinite(nats));

  EngineOptions options;
  options.backend = "cpu";
  auto engine = Engine::open(demo_model_q8_0(), options);
  const PerplexityResult expected = perplexity(*engine, text);
  EXPECT_NEAR(nats, expected.nats_per_token(), 1e-5);
  EXPECT_NEAR(std::stod(field(r.out, "perplexity/token")), expected.perplexity(), 1e-3 * expected.perplexity());
  EXPECT_NEAR(std::stod(field(r.out, "bits/byte")), expected.bits_per_byte(), 1e-5);
  EXPECT_EQ(field(r.out, "tokens").substr(0, field(r.out, "tokens").find(' ')), std::to_string(expected.n_tokens));
}

TEST_F(Cli, MakeModelQuantizeInfo) {
  const std::string f16 = temp_path("made-f16.gguf"), q4 = temp_path("made-q4_k.gguf");
  const Outcome made = rwkv("make-model " + quote(f16) + " --embd 256 --layers 2 --ffn 512 --vocab 512 --seed 3");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const Outcome quant = rwkv("quantize " + quote(f16) + " " + quote(q4) + " q4_k -t 2");
  ASSERT_EQ(quant.exit_code, 0) << quant.err;
  const Outcome info = rwkv("info --tensors --metadata -o json -m " + quote(q4));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["metadata"]["general.file_type"], 15);  // llama.cpp's Q4_K_M
  EXPECT_EQ(j["metadata"]["general.quantization_version"], 2);
  EXPECT_EQ(j["metadata"]["rwkv7.embedding_length"], 256);  // copied
  std::map<std::string, std::string> types;
  for (const auto& t : j["tensors"]) types[t["name"]] = t["type"];
  EXPECT_EQ(types["output.weight"], "q6_K");
  EXPECT_EQ(types["token_embd.weight"], "q4_K");
  EXPECT_EQ(types["blk.1.time_mix_key.weight"], "q4_K");
  EXPECT_EQ(types["blk.1.channel_mix_value.weight"], "q4_K");
  EXPECT_EQ(types["blk.1.time_mix_a1.weight"], "f16");  // LoRA: never quantised
  EXPECT_EQ(types["blk.1.time_mix_w1.weight"], "f32");
  const Outcome gen = rwkv("generate -m " + quote(q4) + " -p ' a' -n 4 --greedy");
  EXPECT_EQ(gen.exit_code, 0) << gen.err;
}

// Benchmark models: rows drawn from a small pool still make a valid, runnable model.
TEST_F(Cli, MakeModelFromARowPool) {
  const std::string path = temp_path("pooled-q8_0.gguf");
  const Outcome made =
      rwkv("make-model " + quote(path) + " --embd 128 --layers 2 --ffn 256 --vocab 300 --type q8_0 " + "--pool-rows 4");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const auto model = Model::load(path);
  EXPECT_EQ(model->layers[1].ffn_value.type, TensorType::Q8_0);
  const Outcome gen = rwkv("generate -m " + quote(path) + " -p ' a' -n 4 --greedy");
  EXPECT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(rwkv("make-model " + quote(path) + " --pool-rows -1").exit_code, 2);
}

TEST_F(Cli, QuantizeFallsBackWhenKQuantBlocksDoNotFitARow) {
  // n_embd 128 is not a multiple of the 256-element k-quant block.
  const std::string f16 = temp_path("narrow-f16.gguf"), q4 = temp_path("narrow-q4_k.gguf");
  ASSERT_EQ(rwkv("make-model " + quote(f16) + " --embd 128 --layers 1").exit_code, 0);
  const Outcome quant = rwkv("quantize " + quote(f16) + " " + quote(q4) + " q4_k_m");
  ASSERT_EQ(quant.exit_code, 0) << quant.err;
  const auto model = Model::load(q4);
  EXPECT_EQ(model->layers[0].wk.type, TensorType::Q5_0);
  EXPECT_EQ(model->head.type, TensorType::Q8_0);
}

TEST_F(Cli, MissingModelFileExitsOneNamingIt) {
  const Outcome r = rwkv("info -m /nonexistent/dir/model.gguf");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("rwkv info: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/dir/model.gguf"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(Cli, UsageErrorsExitTwo) {
  const Outcome unknown = rwkv("frobnicate");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("frobnicate"), std::string::npos) << unknown.err;
  const Outcome bad_option = rwkv("generate -p x --no-such-option");
  EXPECT_EQ(bad_option.exit_code, 2);
  EXPECT_EQ(bad_option.err.rfind("rwkv generate: ", 0), 0u) << bad_option.err;
  const Outcome both = rwkv("logits --tokens 1 --text x -o " + quote(temp_path("x.npy")));
  EXPECT_EQ(both.exit_code, 2) << both.err;
  const Outcome bad_type = rwkv("quantize " + quote(demo_model_f16()) + " " + quote(temp_path("y.gguf")) + " q3_x");
  EXPECT_EQ(bad_type.exit_code, 2) << bad_type.err;
}

TEST_F(Cli, HelpAndVersion) {
  const Outcome bare = rwkv("");
  EXPECT_EQ(bare.exit_code, 0);
  EXPECT_NE(bare.out.find("perplexity"), std::string::npos) << bare.out;
  const Outcome version = rwkv("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out.rfind("rwkv ", 0), 0u) << version.out;
}

TEST_F(Cli, ChatAnswersFromAPipeAndSavesState) {
  const std::string state = temp_path("chat.state");
  const Outcome r = rwkv("chat -n 24 --greedy", "Hello!\n/save " + state + "\n/reset\n/load " + state + "\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  EXPECT_NE(r.err.find(" tokens, "), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("rwkv chat:"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(state));
}

TEST_F(Cli, CheckPassesForCpuAndFailsWhenToleranceIsImpossible) {
  const Outcome ok = rwkv("check --backend cpu -m " + quote(demo_model_f16()));
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("no divergence"), std::string::npos) << ok.out;
  // cpu and cpu-ref round differently, so a tolerance of 1e-12 must trip on some op.
  const Outcome strict =
      rwkv("check --backend cpu --tolerance 1e-12 --logits-tolerance 1e-12 -m " + quote(demo_model_f16()));
  EXPECT_EQ(strict.exit_code, 1);
  EXPECT_EQ(strict.err.rfind("rwkv check: first divergence: ", 0), 0u) << strict.err;
}

TEST_F(Cli, DevicesListsTheCpuBackends) {
  const Outcome r = rwkv("devices");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("cpu-ref  ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cpu      ok"), std::string::npos) << r.out;
}

TEST_F(Cli, BenchReportsEveryTest) {
  const auto j = bench_json("-p 16 -n 4 -r 2 --batch 1,2");
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["test"], "pp16");
  EXPECT_EQ(j[1]["test"], "tg4");
  EXPECT_EQ(j[2]["test"], "tg4 x 2");
  for (const auto& t : j) {
    EXPECT_GT(t["ts_mean"].get<double>(), 0);
    EXPECT_EQ(t["samples_ts"].size(), 2u);
  }
  EXPECT_GT(j[1]["gbps"].get<double>(), 0);
  EXPECT_EQ(j[0]["n_ubatch"], 512);
  EXPECT_EQ(j[0]["warmup_ms"], 1000);
  // Decode is reported against the backend's measured copy bandwidth unless --bandwidth.
  EXPECT_FALSE(j[0].contains("bandwidth_pct"));
  EXPECT_EQ(j[1]["bandwidth_source"], "measured");
  EXPECT_GT(j[1]["bandwidth_gbps"].get<double>(), 0);
  EXPECT_NEAR(j[1]["bandwidth_pct"].get<double>(),
              100 * j[1]["gbps"].get<double>() / j[1]["bandwidth_gbps"].get<double>(), 1e-9);
}

TEST_F(Cli, BenchBandwidthLimitGiven) {
  const auto j = bench_json("-p 0 -n 4 -r 1 --warmup-ms 0 --bandwidth 1000");
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["bandwidth_source"], "given");
  EXPECT_EQ(j[0]["bandwidth_gbps"].get<double>(), 1000);
  EXPECT_NEAR(j[0]["bandwidth_pct"].get<double>(), j[0]["gbps"].get<double>() / 10, 1e-9);
  const Outcome md = rwkv("bench -p 0 -n 4 -r 1 --warmup-ms 0");
  ASSERT_EQ(md.exit_code, 0) << md.err;
  EXPECT_NE(md.out.find("% of limit"), std::string::npos) << md.out;
  EXPECT_NE(md.out.find("measured now"), std::string::npos) << md.out;
  EXPECT_NE(rwkv("bench -p 0 -n 4 --bandwidth 0").exit_code, 0);
}

TEST_F(Cli, BenchPrefillStepSize) {
  const auto j = bench_json("-p 20 -n 0 -r 1 -u 8 --warmup-ms 0");
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["test"], "pp20");
  EXPECT_EQ(j[0]["n_ubatch"], 8);
  EXPECT_EQ(j[0]["warmup_ms"], 0);
  EXPECT_NE(rwkv("bench -p 20 -n 0 -u 0").exit_code, 0);
  EXPECT_NE(rwkv("bench -p 20 -n 0 --warmup-ms -1").exit_code, 0);
}

}  // namespace
}  // namespace rwkv
