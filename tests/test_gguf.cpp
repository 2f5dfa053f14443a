// GGUF reader and writer: round trips through Writer -> File::parse, hand-built v2 files,
// the shipped demo models, and one test per malformed input, each checking its own message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "gguf/gguf.h"
#include "tensor/types.h"

namespace rwkv::gguf {
namespace {

constexpr const char* kName = "test.gguf";

// Little-endian byte builder for hand-made files.
struct Bytes {
  std::vector<uint8_t> v;

  template <typename T>
  Bytes& put(T x) {
    const auto* p = reinterpret_cast<const uint8_t*>(&x);
    v.insert(v.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& str(std::string_view s) {
    put<uint64_t>(s.size());
    v.insert(v.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& key(std::string_view k, ValueType t) {
    str(k);
    return put<uint32_t>(uint32_t(t));
  }
  Bytes& tensor(std::string_view name, const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset) {
    str(name);
    put<uint32_t>(uint32_t(ne.size()));
    for (uint64_t n : ne) put<uint64_t>(n);
    put<uint32_t>(type);
    return put<uint64_t>(offset);
  }
  // Zero padding to `alignment`, then `data_bytes` of data.
  Bytes& data(size_t data_bytes, size_t alignment = 32) {
    v.resize((v.size() + alignment - 1) / alignment * alignment + data_bytes, 0);
    return *this;
  }
  size_t size() const { return v.size(); }
};

Bytes header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
  Bytes b;
  b.put<uint32_t>(0x46554747).put<uint32_t>(version).put<uint64_t>(tensors).put<uint64_t>(kvs);
  return b;
}

std::shared_ptr<File> parse(const std::vector<uint8_t>& bytes) {
  return File::parse(bytes.data(), bytes.size(), kName);
}

// Parses bytes that must be rejected; returns the message.
std::string rejection(const std::vector<uint8_t>& bytes) {
  try {
    parse(bytes);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::format) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "the file was accepted";
  return "";
}

void expect_rejected(const Bytes& b, const std::string& fragment) {
  const std::string message = rejection(b.v);
  EXPECT_EQ(message.rfind(std::string(kName) + ": ", 0), 0u) << message;
  EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nexpected: " << fragment;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (uint8_t& x : out) x = uint8_t(rng());
  return out;
}

Value integer_value(ValueType t, int64_t v) {
  Value out;
  out.type = t;
  out.integer = v;
  return out;
}

Value integer_array(ValueType elem, std::vector<int64_t> values) {
  Value out;
  out.type = ValueType::array;
  out.array_type = elem;
  out.array_size = values.size();
  out.integers = std::move(values);
  return out;
}

Value real_array(ValueType elem, std::vector<double> values) {
  Value out;
  out.type = ValueType::array;
  out.array_type = elem;
  out.array_size = values.size();
  out.reals = std::move(values);
  return out;
}

// ---------------------------------------------------------------------------------------
// Type table

TEST(TensorTypes, GeometryMatchesSpecTable) {
  struct Row {
    TensorType type;
    uint32_t id;
    int block_size, block_bytes;
    bool model_type;
  };
  const Row rows[] = {
      {TensorType::F32, 0, 1, 4, true},       {TensorType::F16, 1, 1, 2, true},
      {TensorType::Q4_0, 2, 32, 18, true},    {TensorType::Q4_1, 3, 32, 20, true},
      {TensorType::Q5_0, 6, 32, 22, true},    {TensorType::Q5_1, 7, 32, 24, true},
      {TensorType::Q8_0, 8, 32, 34, true},    {TensorType::Q8_1, 9, 32, 36, false},
      {TensorType::Q2_K, 10, 256, 84, false}, {TensorType::Q3_K, 11, 256, 110, false},
      {TensorType::Q4_K, 12, 256, 144, true}, {TensorType::Q5_K, 13, 256, 176, true},
      {TensorType::Q6_K, 14, 256, 210, true}, {TensorType::Q8_K, 15, 256, 292, false},
      {TensorType::BF16, 30, 1, 2, true},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(uint32_t(r.type), r.id);
    const std::optional<TypeInfo> by_id = type_info(r.id);
    ASSERT_TRUE(by_id.has_value()) << r.id;
    const TypeInfo& info = type_info(r.type);
    EXPECT_EQ(by_id->name, info.name);
    EXPECT_EQ(info.block_size, r.block_size) << info.name;
    EXPECT_EQ(info.block_bytes, r.block_bytes) << info.name;
    EXPECT_EQ(info.model_type, r.model_type) << info.name;
    EXPECT_EQ(parse_type(info.name), r.type) << info.name;
  }
  for (uint32_t unknown : {4u, 5u, 16u, 29u, 31u, 1000u}) EXPECT_FALSE(type_info(unknown).has_value()) << unknown;
  EXPECT_THROW(type_info(TensorType(4)), Error);
  EXPECT_EQ(row_bytes(TensorType::Q4_K, 512), 288u);
}

TEST(TensorTypes, ParseNamesCaseInsensitivelyWithMixSuffixes) {
  EXPECT_EQ(type_name(TensorType::Q4_K), "q4_K");
  EXPECT_EQ(type_name(TensorType::BF16), "bf16");
  EXPECT_EQ(parse_type("f32"), TensorType::F32);
  EXPECT_EQ(parse_type("F16"), TensorType::F16);
  EXPECT_EQ(parse_type("bf16"), TensorType::BF16);
  EXPECT_EQ(parse_type("Q8_0"), TensorType::Q8_0);
  EXPECT_EQ(parse_type("q4_k"), TensorType::Q4_K);
  EXPECT_EQ(parse_type("q4_k_m"), TensorType::Q4_K);
  EXPECT_EQ(parse_type("Q4_K_S"), TensorType::Q4_K);
  EXPECT_EQ(parse_type("Q5_K_M"), TensorType::Q5_K);
  EXPECT_EQ(parse_type("q3_k_l"), TensorType::Q3_K);
  EXPECT_FALSE(parse_type("q8_0_m").has_value());  // suffixes belong to k-quants only
  EXPECT_FALSE(parse_type("q4_k_x").has_value());
  EXPECT_FALSE(parse_type("f64").has_value());
  EXPECT_FALSE(parse_type("").has_value());
  EXPECT_FALSE(parse_type("_m").has_value());
}

// ---------------------------------------------------------------------------------------
// Round trips

TEST(GgufRoundTrip, EveryValueType) {
  Writer w;
  w.set_u32("a.u32", 4000000000u);
  w.set_i32("a.i32", -123456);
  w.set_u64("a.u64", 1ull << 62);
  w.set_f32("a.f32", 1.5e-5f);
  w.set_bool("a.bool", true);
  w.set_string("a.string", std::string("h\xc3\xa9llo\0x", 8));
  w.set_string_array("a.strings", {"", "one", "two\nlines"});
  w.set_i32_array("a.i32s", {-1, 0, 2147483647});
  w.copy_value("a.u8", integer_value(ValueType::u8, 255));
  w.copy_value("a.i8", integer_value(ValueType::i8, -128));
  w.copy_value("a.u16", integer_value(ValueType::u16, 65535));
  w.copy_value("a.i16", integer_value(ValueType::i16, -32768));
  w.copy_value("a.i64", integer_value(ValueType::i64, std::numeric_limits<int64_t>::min()));
  Value f64;
  f64.type = ValueType::f64;
  f64.real = 3.141592653589793;
  w.copy_value("a.f64", f64);
  w.copy_value("a.bools", integer_array(ValueType::boolean, {1, 0, 1}));
  w.copy_value("a.u8s", integer_array(ValueType::u8, {0, 200}));
  w.copy_value("a.u64s", integer_array(ValueType::u64, {std::numeric_limits<int64_t>::max()}));
  w.copy_value("a.f32s", real_array(ValueType::f32, {0.25, -2}));
  w.copy_value("a.f64s", real_array(ValueType::f64, {1e300}));
  w.copy_value("a.empty", integer_array(ValueType::i16, {}));

  const std::vector<uint8_t> bytes = w.to_bytes();
  const auto f = parse(bytes);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->metadata().size(), 20u);
  EXPECT_EQ(f->metadata()[0].key, "a.u32");  // file order is kept
  EXPECT_EQ(f->get_int("a.u32"), 4000000000);
  EXPECT_EQ(f->find("a.u32")->type, ValueType::u32);
  EXPECT_EQ(f->get_int("a.i32"), -123456);
  EXPECT_EQ(f->get_int("a.u64"), int64_t(1) << 62);
  EXPECT_EQ(f->find("a.f32")->type, ValueType::f32);
  EXPECT_EQ(f->get_real_or("a.f32", 0), double(1.5e-5f));
  EXPECT_EQ(f->find("a.bool")->type, ValueType::boolean);
  EXPECT_EQ(f->get_int("a.bool"), 1);
  EXPECT_EQ(f->get_string("a.string"), std::string("h\xc3\xa9llo\0x", 8));
  EXPECT_EQ(f->find("a.strings")->strings, (std::vector<std::string>{"", "one", "two\nlines"}));
  EXPECT_EQ(f->find("a.strings")->array_type, ValueType::string);
  EXPECT_EQ(f->find("a.i32s")->integers, (std::vector<int64_t>{-1, 0, 2147483647}));
  EXPECT_EQ(f->find("a.i32s")->array_type, ValueType::i32);
  EXPECT_EQ(f->get_int("a.u8"), 255);
  EXPECT_EQ(f->get_int("a.i8"), -128);
  EXPECT_EQ(f->get_int("a.u16"), 65535);
  EXPECT_EQ(f->get_int("a.i16"), -32768);
  EXPECT_EQ(f->get_int("a.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f->get_real_or("a.f64", 0), 3.141592653589793);
  EXPECT_EQ(f->find("a.bools")->integers, (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(f->find("a.u8s")->integers, (std::vector<int64_t>{0, 200}));
  EXPECT_EQ(f->find("a.u8s")->array_type, ValueType::u8);
  EXPECT_EQ(f->find("a.u64s")->integers, (std::vector<int64_t>{std::numeric_limits<int64_t>::max()}));
  EXPECT_EQ(f->find("a.f32s")->reals, (std::vector<double>{0.25, -2}));
  EXPECT_EQ(f->find("a.f64s")->reals, (std::vector<double>{1e300}));
  EXPECT_EQ(f->find("a.empty")->array_size, 0u);
  EXPECT_EQ(f->find("a.empty")->array_type, ValueType::i16);
  for (const KeyValue& kv : f->metadata()) EXPECT_EQ(f->find(kv.key), &kv.value);

  // Copying every value into a second writer reproduces the file byte for byte.
  Writer copy;
  for (const KeyValue& kv : f->metadata()) copy.copy_value(kv.key, kv.value);
  EXPECT_EQ(copy.to_bytes(), bytes);
}

// A file without tensors has no data section, so the writer does not pad it to the
// alignment: with general.alignment = 2^30 (a power of two the reader accepts) it once wrote
// 1 GiB of zeros (found by the GGUF fuzzer). The result still parses, alignment and all.
TEST(GgufRoundTrip, TensorlessFileIsNotPaddedToItsAlignment) {
  Writer w;
  w.set_alignment(1u << 30);
  w.set_string("general.name", "tiny");
  const std::vector<uint8_t> bytes = w.to_bytes();
  EXPECT_LT(bytes.size(), 4096u);
  const auto f = parse(bytes);
  EXPECT_EQ(f->alignment(), size_t(1) << 30);
  EXPECT_TRUE(f->tensors().empty());
  Writer again;
  for (const KeyValue& kv : f->metadata()) again.copy_value(kv.key, kv.value);
  EXPECT_EQ(again.to_bytes(), bytes);
}

TEST(GgufRoundTrip, TypedGetters) {
  Writer w;
  w.set_string("s", "text");
  w.set_u32("n", 7);
  const auto f = parse(w.to_bytes());
  EXPECT_EQ(f->find("absent"), nullptr);
  EXPECT_EQ(f->get_int_or("absent", -5), -5);
  EXPECT_EQ(f->get_int_or("n", -5), 7);
  EXPECT_EQ(f->get_real_or("n", 0.5), 7.0);
  EXPECT_EQ(f->get_real_or("absent", 0.5), 0.5);
  EXPECT_EQ(f->get_string_or("absent", "x"), "x");
  try {
    f->get_int("s");
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::format);
    EXPECT_NE(std::string(e.what()).find("key 's' is string, expected an integer"), std::string::npos) << e.what();
  }
  try {
    f->get_string("absent");
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::model);
    EXPECT_NE(std::string(e.what()).find("missing key 'absent'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(f->get_string_or("n", "x"), Error);
  EXPECT_THROW(f->get_real_or("s", 0), Error);
}

TEST(GgufRoundTrip, TensorTypesAndShapes) {
  struct Case {
    std::string name;
    TensorType type;
    std::vector<int64_t> ne;
  };
  const std::vector<Case> cases = {
      {"vec.f32", TensorType::F32, {3}},
      {"mat.f16", TensorType::F16, {5, 4}},
      {"mat.bf16", TensorType::BF16, {2, 3, 4, 5}},
      {"mat.q8_0", TensorType::Q8_0, {64, 3}},
      {"mat.q4_0", TensorType::Q4_0, {32, 1, 2}},
      {"mat.q4_k", TensorType::Q4_K, {512, 2}},
      {"mat.q6_k", TensorType::Q6_K, {256, 1, 1, 3}},
  };
  for (uint32_t alignment : {32u, 64u, 1u}) {
    Writer w;
    if (alignment != 32) w.set_alignment(alignment);
    std::vector<std::vector<uint8_t>> payloads;
    for (const Case& c : cases) {
      size_t rows = 1;
      for (size_t d = 1; d < c.ne.size(); ++d) rows *= size_t(c.ne[d]);
      payloads.push_back(random_bytes(row_bytes(c.type, c.ne[0]) * rows, uint32_t(payloads.size())));
      w.add_tensor(c.name, c.type, c.ne, payloads.back().data(), payloads.back().size());
    }
    const std::vector<uint8_t> bytes = w.to_bytes();
    const auto f = parse(bytes);
    EXPECT_EQ(f->alignment(), alignment);
    EXPECT_EQ(f->data_offset() % alignment, 0u);
    ASSERT_EQ(f->tensors().size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      const TensorInfo* t = f->tensor(cases[i].name);
      ASSERT_NE(t, nullptr) << cases[i].name;
      EXPECT_EQ(t, &f->tensors()[i]);
      EXPECT_EQ(t->type, cases[i].type);
      EXPECT_EQ(t->n_dims, cases[i].ne.size());
      for (size_t d = 0; d < 4; ++d) EXPECT_EQ(t->ne[d], d < cases[i].ne.size() ? cases[i].ne[d] : 1);
      EXPECT_EQ(t->offset % alignment, 0u);
      EXPECT_EQ(t->data, bytes.data() + f->data_offset() + t->offset);
      ASSERT_EQ(t->nbytes, payloads[i].size());
      EXPECT_EQ(0, memcmp(t->data, payloads[i].data(), t->nbytes)) << cases[i].name;
    }
    EXPECT_EQ(f->tensor("absent"), nullptr);
  }
}

TEST(GgufRoundTrip, WriteToPathAndOpen) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("rwkv_test_gguf_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "out.gguf").string();
  Writer w;
  w.set_string("general.architecture", "rwkv7");
  const std::vector<uint8_t> payload = random_bytes(34 * 2, 7);
  w.add_tensor("t", TensorType::Q8_0, {32, 2}, payload.data(), payload.size());
  w.write(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  {
    const auto f = File::open(path);
    EXPECT_EQ(f->path(), path);
    EXPECT_EQ(f->file_size(), w.to_bytes().size());
    EXPECT_EQ(f->get_string("general.architecture"), "rwkv7");
    EXPECT_EQ(0, memcmp(f->tensor("t")->data, payload.data(), payload.size()));
  }
  const std::string missing_dir = (dir / "no_such_dir" / "out.gguf").string();
  try {
    w.write(missing_dir);
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find(missing_dir), std::string::npos) << e.what();
  }
  try {
    File::open(missing_dir);
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find(missing_dir + ": cannot open: No such file"), std::string::npos) << e.what();
  }
  try {
    File::open(dir.string());
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(GgufWriter, RejectsInvalidInput) {
  Writer w;
  w.set_u32("k", 1);
  EXPECT_THROW(w.set_string("k", "again"), Error);
  EXPECT_THROW(w.set_u32("", 1), Error);
  EXPECT_THROW(w.set_alignment(48), Error);
  EXPECT_THROW(w.set_alignment(0), Error);
  EXPECT_THROW(w.copy_value("u8", integer_value(ValueType::u8, 256)), Error);
  EXPECT_THROW(w.copy_value("b", integer_value(ValueType::boolean, 2)), Error);
  EXPECT_THROW(w.copy_value("i8s", integer_array(ValueType::i8, {1, 128})), Error);
  Value nested;
  nested.type = ValueType::array;
  nested.array_type = ValueType::array;
  nested.array_size = 1;
  EXPECT_THROW(w.copy_value("nested", nested), Error);
  Value mismatched = integer_array(ValueType::i32, {1, 2});
  mismatched.array_size = 3;
  EXPECT_THROW(w.copy_value("mismatched", mismatched), Error);
  const std::vector<uint8_t> data(64 * 4);
  EXPECT_THROW(w.add_tensor("t", TensorType::F32, {64}, data.data(), 63 * 4), Error);
  EXPECT_THROW(w.add_tensor("t", TensorType::Q8_0, {48}, data.data(), 34), Error);
  EXPECT_THROW(w.add_tensor("t", TensorType::F32, {}, data.data(), 0), Error);
  EXPECT_THROW(w.add_tensor("t", TensorType::F32, {1, 1, 1, 1, 1}, data.data(), 4), Error);
  EXPECT_THROW(w.add_tensor("t", TensorType::F32, {0}, data.data(), 0), Error);
  EXPECT_THROW(w.add_tensor(std::string(64, 'n'), TensorType::F32, {1}, data.data(), 4), Error);
  w.add_tensor("t", TensorType::F32, {64}, data.data(), data.size());
  EXPECT_THROW(w.add_tensor("t", TensorType::F32, {64}, data.data(), data.size()), Error);
  // The rejected calls left nothing behind: the file holds one key and one tensor.
  const auto f = parse(w.to_bytes());
  EXPECT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->tensors().size(), 1u);
}

TEST(GgufWriter, CopiedAlignmentGovernsLayout) {
  Writer w;
  w.copy_value("general.alignment", integer_value(ValueType::u32, 256));
  const std::vector<uint8_t> data(4);
  w.add_tensor("a", TensorType::F32, {1}, data.data(), 4);
  w.add_tensor("b", TensorType::F32, {1}, data.data(), 4);
  const auto f = parse(w.to_bytes());
  EXPECT_EQ(f->alignment(), 256u);
  EXPECT_EQ(f->tensor("b")->offset, 256u);
  EXPECT_THROW(Writer().copy_value("general.alignment", integer_value(ValueType::u64, 64)), Error);
}

// ---------------------------------------------------------------------------------------
// Hand-built files

TEST(GgufParse, Version2) {
  Bytes b = header(2, 2, 2);
  b.key("general.architecture", ValueType::string).str("rwkv7");
  b.key("n", ValueType::u64).put<uint64_t>(12);
  b.tensor("a", {4}, 0, 0);
  b.tensor("b", {32, 2}, 8, 32);
  const size_t data_at = (b.size() + 31) / 32 * 32;
  b.data(32 + 68);
  const auto f = parse(b.v);
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->data_offset(), data_at);
  EXPECT_EQ(f->get_string("general.architecture"), "rwkv7");
  EXPECT_EQ(f->get_int("n"), 12);
  EXPECT_EQ(f->tensor("b")->type, TensorType::Q8_0);
  EXPECT_EQ(f->tensor("b")->nbytes, 68u);
  EXPECT_EQ(f->tensor("b")->data, b.v.data() + data_at + 32);
}

TEST(GgufParse, NestedArraysAreValidatedAndCounted) {
  Bytes b = header(0, 1);
  b.key("nested", ValueType::array).put<uint32_t>(uint32_t(ValueType::array)).put<uint64_t>(2);
  b.put<uint32_t>(uint32_t(ValueType::u16)).put<uint64_t>(2).put<uint16_t>(1).put<uint16_t>(2);
  b.put<uint32_t>(uint32_t(ValueType::string)).put<uint64_t>(1).str("x");
  const auto f = parse(b.v);
  const Value* v = f->find("nested");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->array_type, ValueType::array);
  EXPECT_EQ(v->array_size, 2u);
}

TEST(GgufParse, TensorsNeedNotBeInOffsetOrder) {
  Bytes b = header(2, 0);
  b.tensor("second", {8}, 0, 32).tensor("first", {8}, 0, 0).data(64);
  const auto f = parse(b.v);
  EXPECT_EQ(f->tensor("second")->offset, 32u);
}

// A small file with keys of several kinds and three tensors, used for the truncation sweep.
std::vector<uint8_t> sample_file() {
  Writer w;
  w.set_string("general.architecture", "rwkv7");
  w.set_string_array("tokenizer.ggml.tokens", {"a", "bc", ""});
  w.set_i32_array("ints", {1, 2, 3});
  w.set_bool("flag", false);
  w.set_f32("eps", 1e-5f);
  w.copy_value("reals", real_array(ValueType::f64, {1, 2}));
  const std::vector<uint8_t> payload = random_bytes(2 * 34, 3);
  w.add_tensor("w", TensorType::Q8_0, {32, 2}, payload.data(), payload.size());
  w.add_tensor("v", TensorType::F32, {3}, payload.data(), 12);
  w.add_tensor("u", TensorType::F16, {5}, payload.data(), 10);
  return w.to_bytes();
}

TEST(GgufMalformed, EveryTruncationThrows) {
  const std::vector<uint8_t> full = sample_file();
  const auto f = parse(full);
  size_t data_end = 0;
  for (const TensorInfo& t : f->tensors())
    data_end = std::max<size_t>(data_end, f->data_offset() + t.offset + t.nbytes);
  ASSERT_LT(data_end, full.size());  // the last tensor is padded
  for (size_t n = 0; n < data_end; ++n) {
    // A copy of exactly n bytes, so that AddressSanitizer sees any read past the end.
    const std::vector<uint8_t> prefix(full.begin(), full.begin() + std::ptrdiff_t(n));
    const std::string message = rejection(prefix);
    EXPECT_NE(message.find(" at byte "), std::string::npos) << n << ": " << message;
  }
  for (size_t n = data_end; n <= full.size(); ++n) {  // cutting only trailing padding is harmless
    EXPECT_NO_THROW(parse(std::vector<uint8_t>(full.begin(), full.begin() + std::ptrdiff_t(n)))) << n;
  }
}

TEST(GgufMalformed, Truncated) {
  Bytes b = header(0, 1);
  b.key("k", ValueType::u32);
  expect_rejected(b, "key 'k' value at byte 37: truncated: needs 4 bytes, the file has 0 left");
}

TEST(GgufMalformed, WrongMagic) {
  Bytes b;
  b.put<uint32_t>(0x46554746).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(0);
  expect_rejected(b, "magic at byte 0: not a GGUF file");
}

TEST(GgufMalformed, Version1) { expect_rejected(header(0, 0, 1), "version at byte 4: unsupported GGUF version 1"); }
TEST(GgufMalformed, Version4) { expect_rejected(header(0, 0, 4), "unsupported GGUF version 4"); }
TEST(GgufMalformed, BigEndian) { expect_rejected(header(0, 0, 0x03000000), "big-endian"); }

TEST(GgufMalformed, HugeTensorCount) {
  expect_rejected(header(uint64_t(1) << 60, 0), "tensor count at byte 8: 1152921504606846976 tensors cannot fit");
}

TEST(GgufMalformed, HugeKeyValueCount) {
  expect_rejected(header(0, ~uint64_t(0)), "key/value count at byte 16: 18446744073709551615 key/value pairs");
}

TEST(GgufMalformed, CountsTogetherTooLarge) {
  Bytes b = header(1, 2);
  b.data(40, 1);  // room for either the tensor or the two keys, not both
  expect_rejected(b, "1 tensors and 2 key/value pairs cannot fit");
}

TEST(GgufMalformed, HugeStringLength) {
  Bytes b = header(0, 1);
  b.key("k", ValueType::string).put<uint64_t>(~uint64_t(0));
  expect_rejected(b, "key 'k' value at byte 37: string length 18446744073709551615 exceeds");
}

TEST(GgufMalformed, HugeArrayCount) {
  Bytes b = header(0, 1);
  b.key("k", ValueType::array).put<uint32_t>(uint32_t(ValueType::i64)).put<uint64_t>(uint64_t(1) << 61);
  expect_rejected(b, "array of 2305843009213693952 i64 elements cannot fit");
}

TEST(GgufMalformed, BadValueType) {
  Bytes b = header(0, 1);
  b.key("k", ValueType(13)).put<uint64_t>(0);
  expect_rejected(b, "key 'k' value type at byte 33: unknown value type 13");
}

TEST(GgufMalformed, BadArrayElementType) {
  Bytes b = header(0, 1);
  b.key("k", ValueType::array).put<uint32_t>(99).put<uint64_t>(0);
  expect_rejected(b, "key 'k' value at byte 37: unknown value type 99");
}

TEST(GgufMalformed, BoolByte2) {
  Bytes b = header(0, 1);
  b.key("flag", ValueType::boolean).put<uint8_t>(2);
  expect_rejected(b, "key 'flag' value at byte 40: bool byte is 2, must be 0 or 1");
}

TEST(GgufMalformed, U64BeyondInt64) {
  Bytes b = header(0, 1);
  b.key("big", ValueType::u64).put<uint64_t>(~uint64_t(0));
  expect_rejected(b, "u64 value 18446744073709551615 exceeds INT64_MAX");
}

// `levels` arrays, each holding one array, around an empty u8 array.
Bytes nested_arrays(int levels) {
  Bytes b = header(0, 1);
  b.key("deep", ValueType::array);
  for (int i = 0; i < levels; ++i) b.put<uint32_t>(uint32_t(ValueType::array)).put<uint64_t>(1);
  b.put<uint32_t>(uint32_t(ValueType::u8)).put<uint64_t>(0);
  return b;
}

TEST(GgufMalformed, ArraysNestedTooDeep) {
  EXPECT_NO_THROW(parse(nested_arrays(7).v));  // 8 levels of arrays in all
  expect_rejected(nested_arrays(8), "arrays nested more than 8 deep");
}

TEST(GgufMalformed, DuplicateKey) {
  Bytes b = header(0, 2);
  b.key("k", ValueType::u8).put<uint8_t>(1);
  b.key("k", ValueType::u8).put<uint8_t>(2);
  expect_rejected(b, "key 'k' at byte 38: duplicate key (first at byte 24)");
}

TEST(GgufMalformed, EmptyKey) {
  Bytes b = header(0, 1);
  b.key("", ValueType::u8).put<uint8_t>(1);
  expect_rejected(b, "key #0 at byte 24: empty key");
}

TEST(GgufMalformed, AlignmentNotPowerOfTwo) {
  Bytes b = header(0, 1);
  b.key("general.alignment", ValueType::u32).put<uint32_t>(48);
  expect_rejected(b, "key 'general.alignment' at byte 24: alignment 48 is not a non-zero power of two");
}

TEST(GgufMalformed, AlignmentZero) {
  Bytes b = header(0, 1);
  b.key("general.alignment", ValueType::u32).put<uint32_t>(0);
  expect_rejected(b, "alignment 0 is not");
}

TEST(GgufMalformed, AlignmentWrongType) {
  Bytes b = header(0, 1);
  b.key("general.alignment", ValueType::u64).put<uint64_t>(32);
  expect_rejected(b, "key 'general.alignment' at byte 24: must be a u32, found u64");
}

TEST(GgufMalformed, BadTensorType) {
  Bytes b = header(1, 0);
  b.tensor("t", {4}, 99, 0).data(32);
  expect_rejected(b, "tensor 't' type at byte 45: unknown tensor type id 99");
}

TEST(GgufMalformed, NDims0) {
  Bytes b = header(1, 0);
  b.tensor("t", {}, 0, 0).data(32);
  expect_rejected(b, "tensor 't' n_dims at byte 33: n_dims is 0, must be 1 to 4");
}

TEST(GgufMalformed, NDims5) {
  Bytes b = header(1, 0);
  b.tensor("t", {1, 1, 1, 1, 1}, 0, 0).data(32);
  expect_rejected(b, "n_dims is 5, must be 1 to 4");
}

TEST(GgufMalformed, DimensionZero) {
  Bytes b = header(1, 0);
  b.tensor("t", {4, 0}, 0, 0).data(32);
  expect_rejected(b, "tensor 't' dimension 1 at byte 45: size 0");
}

TEST(GgufMalformed, ElementCountOverflow) {
  Bytes b = header(1, 0);
  b.tensor("t", {uint64_t(1) << 32, uint64_t(1) << 32}, 0, 0).data(32);
  expect_rejected(b, "tensor 't' dimension 1 at byte 45: size 4294967296 makes the element count overflow");
}

TEST(GgufMalformed, ByteSizeOverflow) {
  Bytes b = header(1, 0);
  b.tensor("t", {uint64_t(1) << 62}, 0, 0).data(32);  // 2^62 f32 elements: 2^64 bytes
  expect_rejected(b, "byte size overflows");
}

TEST(GgufMalformed, RowNotMultipleOfBlock) {
  Bytes b = header(1, 0);
  b.tensor("t", {48}, 8, 0).data(64);
  expect_rejected(b, "dimension 0 (48) is not a multiple of the q8_0 block size 32");
}

TEST(GgufMalformed, OffsetOutOfBounds) {
  Bytes b = header(1, 0);
  b.tensor("t", {16}, 0, 32).data(64);  // 64 bytes at 32 in a 64-byte data section
  expect_rejected(b, "tensor 't' offset at byte 49: 64 bytes at data offset 32 extend past the end of the file");
}

TEST(GgufMalformed, MisalignedOffset) {
  Bytes b = header(1, 0);
  b.tensor("t", {4}, 0, 4).data(64);
  expect_rejected(b, "offset 4 is not a multiple of the alignment 32");
}

TEST(GgufMalformed, OverlappingTensors) {
  Bytes b = header(2, 0);
  b.tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).data(64);
  expect_rejected(b, "tensor 'b' offset at byte 82: data at 32 overlaps tensor 'a' (bytes 0 to 64)");
}

TEST(GgufMalformed, DuplicateTensorName) {
  Bytes b = header(2, 0);
  b.tensor("t", {4}, 0, 0).tensor("t", {4}, 0, 32).data(64);
  expect_rejected(b, "tensor 't' at byte 57: duplicate tensor name (first is tensor #0)");
}

TEST(GgufMalformed, TensorNameTooLong) {
  Bytes b = header(1, 0);
  b.tensor(std::string(64, 'n'), {4}, 0, 0).data(32);
  expect_rejected(b, "name is 64 bytes; ggml limits tensor names to 63");
}

TEST(GgufMalformed, EmptyTensorName) {
  Bytes b = header(1, 0);
  b.tensor("", {4}, 0, 0).data(32);
  expect_rejected(b, "tensor #0 name at byte 24: empty tensor name");
}

TEST(GgufMalformed, NonPrintableNamesAreEscaped) {
  Bytes b = header(0, 2);
  b.key("\x01\xff", ValueType::u8).put<uint8_t>(0);
  b.key("\x01\xff", ValueType::u8).put<uint8_t>(0);
  expect_rejected(b, "key '\\x01\\xff' at byte");
}

// ---------------------------------------------------------------------------------------
// The shipped demo models

TEST(GgufModels, DemoModelsParseAndCopyExactly) {
  const std::string dir = std::string(RWKV_SOURCE_DIR) + "/models/";
  const auto f16 = File::open(dir + "rwkv7-demo-6x256-f16.gguf");
  const auto q8 = File::open(dir + "rwkv7-demo-6x256-q8_0.gguf");
  for (const auto& f : {f16, q8}) {
    EXPECT_EQ(f->version(), 3u);
    EXPECT_EQ(f->get_string("general.architecture"), "rwkv7");
    EXPECT_EQ(f->get_int("rwkv7.block_count"), 6);
    EXPECT_EQ(f->get_int("rwkv7.embedding_length"), 256);
    const Value* tokens = f->find("tokenizer.ggml.tokens");
    ASSERT_NE(tokens, nullptr);
    EXPECT_EQ(tokens->strings.size(), 2048u);
    const TensorInfo* emb = f->tensor("token_embd.weight");
    ASSERT_NE(emb, nullptr);
    EXPECT_EQ(emb->ne[0], 256);
    EXPECT_EQ(emb->ne[1], 2048);
  }
  ASSERT_EQ(f16->tensors().size(), q8->tensors().size());
  for (const TensorInfo& t : f16->tensors()) EXPECT_NE(q8->tensor(t.name), nullptr) << t.name;

  // Re-writing every key and tensor of the q8_0 file gives back the same metadata and data.
  Writer w;
  for (const KeyValue& kv : q8->metadata()) w.copy_value(kv.key, kv.value);
  for (const TensorInfo& t : q8->tensors()) {
    w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims), t.data, t.nbytes);
  }
  const std::vector<uint8_t> bytes = w.to_bytes();
  const auto copy = parse(bytes);
  ASSERT_EQ(copy->metadata().size(), q8->metadata().size());
  for (size_t i = 0; i < copy->metadata().size(); ++i) {
    const Value& a = q8->metadata()[i].value;
    const Value& b = copy->metadata()[i].value;
    EXPECT_EQ(q8->metadata()[i].key, copy->metadata()[i].key);
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.array_type, b.array_type);
    EXPECT_EQ(a.integer, b.integer);
    EXPECT_EQ(a.real, b.real);
    EXPECT_EQ(a.string, b.string);
    EXPECT_EQ(a.strings, b.strings);
    EXPECT_EQ(a.integers, b.integers);
    EXPECT_EQ(a.reals, b.reals);
  }
  for (const TensorInfo& t : q8->tensors()) {
    const TensorInfo* c = copy->tensor(t.name);
    ASSERT_NE(c, nullptr);
    ASSERT_EQ(c->nbytes, t.nbytes);
    EXPECT_EQ(0, memcmp(c->data, t.data, t.nbytes)) << t.name;
  }
}

}  // namespace
}  // namespace rwkv::gguf
