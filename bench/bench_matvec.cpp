// bench_matvec: the CUDA decode matvec alone, one matrix at a time, for telling its fixed
// cost per launch from its streaming rate (src/backend/cuda/NOTES.md, "after session 5").
// Each shape is launched back to back (one token, x quantised as the decode step gives it),
// cycling over enough copies of the matrix that every launch reads from DRAM as in the
// decode step (the 50 MB L2 would otherwise hold a layer matrix), the launches recorded in
// a CUDA graph as the decode step is: with programmatic dependent launch as in the decode
// step, and without it (each launch then starts after the previous one has finished).
// Prints us per launch and the weight bytes per second; a fit of time = fixed + bytes /
// rate over the shapes shows whether a layer matrix loses to a fixed cost or to its grid.
//
//   bench_matvec [--type q8_0|f16|q4_k] [--iters 200] [--shape TEXT]  (only shapes whose name has TEXT)
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "tensor/types.h"

#if defined(RWKV_HAVE_CUDA)
#include <cuda_runtime.h>

#include "backend/cuda/ops.h"
#include "common/error.h"

namespace rwkv {
namespace {

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

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    fail(ErrorCode::backend, std::string("bench_matvec: ") + what + ": " + cudaGetErrorString(err));
}

// Microseconds per launch of `iters` back-to-back launches cycling over the jobs, recorded
// in one graph (PDL as set by cuda::set_pdl) and replayed after a warm-up replay.
double time_launches(const std::vector<cuda::MatvecJob>& jobs, int iters) {
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  cudaGraph_t graph = nullptr;
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
  for (int i = 0; i < iters; ++i) cuda::matvec(&jobs[size_t(i) % jobs.size()], 1, 1, stream);
  check(cudaStreamEndCapture(stream, &graph), "end capture");
  cudaGraphExec_t exec = nullptr;
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  cudaEvent_t t0, t1;
  check(cudaEventCreate(&t0), "event");
  check(cudaEventCreate(&t1), "event");
  check(cudaGraphLaunch(exec, stream), "warm-up replay");
  check(cudaEventRecord(t0, stream), "record");
  check(cudaGraphLaunch(exec, stream), "replay");
  check(cudaEventRecord(t1, stream), "record");
  check(cudaEventSynchronize(t1), "sync");
  float ms = 0.f;
  check(cudaEventElapsedTime(&ms, t0, t1), "elapsed");
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  return double(ms) * 1e3 / iters;
}

int run(int argc, char** argv) {
  TensorType type = TensorType::Q8_0;
  int iters = 200;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--type" && i + 1 < argc) {
      const auto t = parse_type(argv[++i]);
      if (!t) fail(ErrorCode::argument, std::string("bench_matvec: unknown type ") + argv[i]);
      type = *t;
    } else if (a == "--iters" && i + 1 < argc) {
      iters = std::stoi(argv[++i]);
    } else if (a == "--shape" && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr, "usage: bench_matvec [--type q8_0|f16|q4_k] [--iters N] [--shape TEXT]\n");
      return 2;
    }
  }
  std::string why;
  if (cuda::device_count(&why) == 0) {
    std::printf("bench_matvec: %s\n", why.c_str());
    return 0;
  }
  // The 2.9B layer matrices, the head, and matrices of the FFN's bytes in other grids.
  const Shape shapes[] = {
      {"W_o 2560x2560", 2560, 2560},  {"ffn value 2560x10240", 2560, 10240}, {"ffn key 10240x2560", 10240, 2560},
      {"tall 40960x640", 40960, 640}, {"4 keys 40960x2560", 40960, 2560},    {"head 65536x2560", 65536, 2560},
      {"0.1B W_o 768x768", 768, 768}, {"0.1B key 3072x768", 3072, 768},      {"0.1B value 768x3072", 768, 3072}};
  std::mt19937_64 rng(7);
  std::printf("| shape | MB | us/launch (PDL) | GB/s | us/launch (no PDL) | GB/s |\n|---|---:|---:|---:|---:|---:|\n");
  for (const Shape& s : shapes) {
    if (!only.empty() && std::string(s.name).find(only) == std::string::npos) continue;
    // Rows of a type's whole blocks only (k-quants: 256 columns): the others are skipped.
    if (s.cols % type_info(type).block_size != 0) {
      std::printf("| %s | - | (columns not whole %s blocks) | | | |\n", s.name, std::string(type_name(type)).c_str());
      continue;
    }
    const std::vector<uint8_t> host = random_matrix(type, s.rows, s.cols, rng);
    // Copies enough to stream 256 MB per cycle: no launch finds its matrix in L2.
    const int copies = int(std::max<size_t>(2, (size_t(256) << 20) / host.size() + 1));
    std::vector<cuda::DeviceMatrix> mats;
    for (int c = 0; c < copies; ++c) mats.push_back(cuda::upload_matrix(type, s.rows, s.cols, host.data()));
    cuda::DeviceBuffer x(size_t(s.cols) * 4), y(size_t(s.rows) * 4), qx(cuda::quant_x_bytes(1, s.cols));
    std::vector<float> hx(size_t(s.cols));
    std::normal_distribution<float> nd(0.f, 1.f);
    for (float& v : hx) v = nd(rng);
    x.upload(hx.data(), hx.size() * 4);
    std::vector<cuda::MatvecJob> jobs;
    for (const cuda::DeviceMatrix& m : mats) {
      cuda::MatvecJob j;
      j.W = m.view();
      j.x = x.as<float>();
      j.x_stride = s.cols;
      j.y = y.as<float>();
      j.y_stride = s.rows;
      if (type != TensorType::F16) j.xq = cuda::quant_x_view(qx.data(), 1, s.cols);
      jobs.push_back(j);
    }
    if (type != TensorType::F16)
      cuda::quantize_rows(jobs[0].x, s.cols, 1, s.cols, cuda::InOp::none, jobs[0].xq, nullptr);
    const int n = std::max(iters, copies);
    const double mb = double(host.size()) / 1e6;
    cuda::set_pdl(true);
    const double pdl = time_launches(jobs, n);
    cuda::set_pdl(false);
    const double serial = time_launches(jobs, n);
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
