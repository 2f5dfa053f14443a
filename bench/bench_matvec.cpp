// bench_matvec: the CUDA decode matvec alone, one matrix at a time, for telling its fixed
// cost per launch from its streaming rate (src/backend/cuda/NOTES.md, "after session 5").
// Each shape is launched back to back `--iters` times (one token, x quantised as the decode
// step gives it), with programmatic dependent launch as in the decode step and without it
// (each launch then starts after the previous one has finished). Prints us per launch and
// the weight bytes per second; a fit of time = fixed + bytes / rate over the shapes shows
// whether a layer matrix loses to a fixed cost or to its grid.
//
//   bench_matvec [--type q8_0|f16|q4_k] [--iters 200]
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "tensor/types.h"

#if defined(RWKV_HAVE_CUDA)
#include "backend/cuda/ops.h"
#include "common/error.h"

namespace rwkv {
namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  int64_t rows, cols;
};

// Random GGUF bytes with every block scale set to 1.0 (f16 0x3C00) so that no NaN appears;
// the values do not matter for the timing.
std::vector<uint8_t> random_matrix(TensorType type, int64_t rows, int64_t cols, std::mt19937_64& rng) {
  std::vector<uint8_t> bytes(row_bytes(type, cols) * size_t(rows));
  for (size_t i = 0; i < bytes.size(); i += 8) {
    const uint64_t r = rng();
    for (size_t k = 0; k < 8 && i + k < bytes.size(); ++k) bytes[i + k] = uint8_t(r >> (8 * k));
  }
  const TypeInfo& info = type_info(type);
  if (type == TensorType::F16) {
    for (size_t i = 1; i < bytes.size(); i += 2) bytes[i] &= 0x3B;  // |value| < 1
  } else if (type == TensorType::Q8_0 || type == TensorType::Q4_K) {
    // Q8_0: d first in each 34-byte block; Q4_K: d and dmin first in each 144-byte block.
    for (size_t b = 0; b < bytes.size(); b += info.block_bytes) {
      bytes[b] = 0x00;
      bytes[b + 1] = 0x3C;
      if (type == TensorType::Q4_K) {
        bytes[b + 2] = 0x00;
        bytes[b + 3] = 0x3C;
      }
    }
  } else {
    fail(ErrorCode::argument, "bench_matvec: type must be q8_0, f16 or q4_k");
  }
  return bytes;
}

// Microseconds per launch of `iters` back-to-back launches of job j (one activation row).
double time_launches(const cuda::MatvecJob& j, int iters, cuda::DeviceBuffer& sync) {
  float probe = 0.f;
  for (int i = 0; i < 5; ++i) cuda::matvec(&j, 1, 1, nullptr);  // warm-up
  sync.download(&probe, sizeof(probe));
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) cuda::matvec(&j, 1, 1, nullptr);
  sync.download(&probe, sizeof(probe));  // a synchronous copy: waits for the launches
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / iters;
}

int run(int argc, char** argv) {
  TensorType type = TensorType::Q8_0;
  int iters = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--type" && i + 1 < argc) {
      const auto t = parse_type(argv[++i]);
      if (!t) fail(ErrorCode::argument, std::string("bench_matvec: unknown type ") + argv[i]);
      type = *t;
    } else if (a == "--iters" && i + 1 < argc) {
      iters = std::stoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_matvec [--type q8_0|f16|q4_k] [--iters N]\n");
      return 2;
    }
  }
  std::string why;
  if (cuda::device_count(&why) == 0) {
    std::printf("bench_matvec: %s\n", why.c_str());
    return 0;
  }
  // The 2.9B layer matrices, the head, and matrices of the FFN's bytes in other grids.
  const Shape shapes[] = {{"W_o 2560x2560", 2560, 2560},       {"ffn value 2560x10240", 2560, 10240},
                          {"ffn key 10240x2560", 10240, 2560}, {"tall 40960x640", 40960, 640},
                          {"4 keys 40960x2560", 40960, 2560},  {"head 65536x2560", 65536, 2560}};
  std::mt19937_64 rng(7);
  std::printf("| shape | MB | us/launch (PDL) | GB/s | us/launch (no PDL) | GB/s |\n|---|---:|---:|---:|---:|---:|\n");
  for (const Shape& s : shapes) {
    const std::vector<uint8_t> host = random_matrix(type, s.rows, s.cols, rng);
    const cuda::DeviceMatrix m = cuda::upload_matrix(type, s.rows, s.cols, host.data());
    cuda::DeviceBuffer x(size_t(s.cols) * 4), y(size_t(s.rows) * 4), qx(cuda::quant_x_bytes(1, s.cols));
    std::vector<float> hx(size_t(s.cols));
    std::normal_distribution<float> nd(0.f, 1.f);
    for (float& v : hx) v = nd(rng);
    x.upload(hx.data(), hx.size() * 4);
    cuda::MatvecJob j;
    j.W = m.view();
    j.x = x.as<float>();
    j.x_stride = s.cols;
    j.y = y.as<float>();
    j.y_stride = s.rows;
    if (type != TensorType::F16) {
      j.xq = cuda::quant_x_view(qx.data(), 1, s.cols);
      cuda::quantize_rows(j.x, s.cols, 1, s.cols, cuda::InOp::none, j.xq, nullptr);
    }
    const double mb = double(host.size()) / 1e6;
    cuda::set_pdl(true);
    const double pdl = time_launches(j, iters, y);
    cuda::set_pdl(false);
    const double serial = time_launches(j, iters, y);
    cuda::set_pdl(true);
    std::printf("| %s | %.1f | %.2f | %.0f | %.2f | %.0f |\n", s.name, mb, pdl, mb * 1e3 / pdl, serial,
                mb * 1e3 / serial);
  }
  return 0;
}

}  // namespace
}  // namespace rwkv

int main(int argc, char** argv) {
  try {
    return rwkv::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_matvec: %s\n", e.what());
    return 1;
  }
}
#else
int main() {
  std::printf("bench_matvec: built without CUDA\n");
  return 0;
}
#endif
