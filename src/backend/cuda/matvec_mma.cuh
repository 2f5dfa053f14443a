// One-row decode products of F16 / BF16 matrices on the tensor cores (matvec_kernel.cuh
// calls run_job_mma for jobs the host marked JobDev::mma).
//
// Why: the CUDA-core item of a 16-bit weight (ItemHalf) spends ~19 instructions and three
// 16-byte L1 requests (8 weights, 8 floats of x) per 16 weight bytes; one
// mma.m16n8k16 takes 256 weights per warp instruction, and the warp's x is read from shared
// memory once per 32 columns. Same grid as the CUDA-core path (a 256-thread block owns 8
// rows) and the same one round of ten 16-byte weight loads per thread, requested before the
// PDL wait.
//
// Layout of one block: warp w owns the columns [w * cols / 8, (w + 1) * cols / 8) of the
// block's 8 rows, in chunks of 32 columns. Lane (g = lane / 4, t = lane % 4) loads 16 bytes of
// row g: columns 32 c + 8 t .. + 8 of chunk c, which are its A fragment registers a0 and a2
// (rows g; rows g + 8 of the 16-row fragment are zero) of two mma, the first on columns
// 8 t + {0, 1} (as k = 2t, 2t + 1) and 8 t + {2, 3} (k = 2t + 8, 2t + 9), the second on
// 8 t + {4..7}. The B fragment uses the same column order: lane (g, t) holds x at columns
// 8 t .. + 8 of the chunk in column n = g of B. Column 0 of B is x rounded to 16 bits, column
// 1 the rounding's remainder (rounded again), for BF16 column 2 what is left after that, the
// rest zero: the sum of D's columns is W x with x kept to ~22 bits (F16: two terms) or ~24
// (BF16: three), every product exact in fp32 and accumulated in fp32. The eight warps' sums meet in shared memory in
// warp order (deterministic).
//
// x is staged once per block into shared memory as those rows of 16-bit terms after the
// wait. Like the prefill's f16 GEMM, an activation beyond the f16 range (|x| > 65504, far
// outside what a LayerNorm, the WKV output or a token-shift mix produce) is not representable.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/ops.h"

namespace rwkv::cuda::matvec_detail {

constexpr int kMmaRows = 8;   // rows of a block (the A fragment's rows g; g + 8 are zero)
constexpr int kMmaWarps = 8;  // warps of a block
constexpr int kMmaThreads = 32 * kMmaWarps;
constexpr int kMmaChunks = 10;  // 32-column chunks a lane requests in one round (16 bytes each)

// Shared memory of a mma job: x as up to three rows of 16-bit terms, then the warps' sums.
__host__ __device__ constexpr size_t mma_smem_bytes(int64_t cols) {
  return size_t(cols) * 6 + kMmaWarps * kMmaRows * sizeof(float);
}

// D += A B for one m16n8k16 tile, fp32 accumulators; A rows 8..15 are zero.
template <bool kBF16>
__device__ __forceinline__ void mma16(float (&d)[4], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
  if constexpr (kBF16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(0u), "r"(a2), "r"(0u), "r"(b0), "r"(b1));
  }
}

// 16-bit terms per x value: F16 keeps ~22 bits of x in two, BF16 ~24 in three.
template <bool kBF16>
constexpr int kMmaTerms = kBF16 ? 3 : 2;

// Two floats as kMmaTerms pairs of 16-bit values (lower address first): the rounded pair,
// then each time the pair of what rounding left out.
template <bool kBF16>
__device__ __forceinline__ void split_pair(float a, float b, uint32_t (&terms)[kMmaTerms<kBF16>]) {
#pragma unroll
  for (int k = 0; k < kMmaTerms<kBF16>; ++k) {
    float2 back;
    if constexpr (kBF16) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
      back = __bfloat1622float2(h);
      terms[k] = *reinterpret_cast<const uint32_t*>(&h);
    } else {
      const __half2 h = __floats2half2_rn(a, b);
      back = __half22float2(h);
      terms[k] = *reinterpret_cast<const uint32_t*>(&h);
    }
    a -= back.x;
    b -= back.y;
  }
}

// Rows [8 blk, 8 blk + 8) of the job (T = 1, a block of 32 * kMmaWarps threads, 16-bit weights, x 16-byte aligned, cols
// a multiple of 32 * kMmaWarps; the host checks all of it: matvec.cu use_mma).
template <bool kBF16>
__device__ __forceinline__ void run_job_mma(const MatvecJob& job, int blk, uint8_t* smem) {
  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int cols = int(job.W.cols);
  const int chunks = cols / (32 * kMmaWarps);  // per warp
  const int64_t row = int64_t(blk) * kMmaRows + g;
  const bool row_ok = row < job.W.rows;
  const uint8_t* wrow = job.W.plane[0] + job.W.stride[0] * (row_ok ? row : 0) + size_t(64) * warp * chunks + 16 * t;

  int4 a[kMmaChunks];
#pragma unroll
  for (int i = 0; i < kMmaChunks; ++i) a[i] = i < chunks && row_ok ? ld_stream16(wrow + 64 * i) : make_int4(0, 0, 0, 0);
  // The epilogue's operands (a weight; the residual no kernel right before writes).
  const int64_t out_row = int64_t(blk) * kMmaRows + tid;
  const bool writer = tid < kMmaRows && out_row < job.W.rows;
  float bias = 0.f, old = 0.f;
  if (writer) {
    if (job.bias) bias = job.bias[out_row];
    if (job.out_op == OutOp::add) old = job.y[out_row];
  }

  pdl_wait();
  pdl_trigger();
  constexpr int kTerms = kMmaTerms<kBF16>;
  uint32_t* xs = reinterpret_cast<uint32_t*>(smem);  // [kTerms][cols / 2] pairs
  float* sums = reinterpret_cast<float*>(smem + size_t(cols) * 6);
  {
    constexpr int kBatch = 4;
    const int n4 = cols / 4;
    for (int b0 = 0; b0 < n4; b0 += kBatch * kMmaThreads) {
      float4 v[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int e = b0 + k * kMmaThreads + tid;
        if (e < n4) v[k] = reinterpret_cast<const float4*>(job.x)[e];
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int e = b0 + k * kMmaThreads + tid;
        if (e >= n4) break;
        uint32_t xy[kTerms], zw[kTerms];
        split_pair<kBF16>(v[k].x, v[k].y, xy);
        split_pair<kBF16>(v[k].z, v[k].w, zw);
#pragma unroll
        for (int m = 0; m < kTerms; ++m) reinterpret_cast<uint2*>(xs + m * (cols / 2))[e] = make_uint2(xy[m], zw[m]);
      }
    }
  }
  __syncthreads();

  float d[4] = {0.f, 0.f, 0.f, 0.f};
  // Lanes of B column m < kTerms read term m; the others hold zeros.
  const uint32_t* xb = xs + (g < kTerms ? g : 0) * (cols / 2) + (warp * chunks * 32 + 8 * t) / 2;
#pragma unroll
  for (int i = 0; i < kMmaChunks; ++i) {
    if (i >= chunks) break;
    const int4 b = g < kTerms ? *reinterpret_cast<const int4*>(xb + 16 * i) : make_int4(0, 0, 0, 0);
    mma16<kBF16>(d, uint32_t(a[i].x), uint32_t(a[i].y), uint32_t(b.x), uint32_t(b.y));
    mma16<kBF16>(d, uint32_t(a[i].z), uint32_t(a[i].w), uint32_t(b.z), uint32_t(b.w));
  }
  // Row g's terms are D columns 0..kTerms-1: d[0], d[1] of lanes t = 0 and 1.
  float p = d[0] + d[1];
  p += __shfl_down_sync(0xffffffffu, p, 1);
  if (t == 0) sums[warp * kMmaRows + g] = p;
  __syncthreads();
  if (writer) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kMmaWarps; ++w) s += sums[w * kMmaRows + tid];
    job.y[out_row] = apply_out(job.out_op, s, bias, old);
    if (job.out_op == OutOp::add && job.y_raw) job.y_raw[out_row] = s;
  }
}

}  // namespace rwkv::cuda::matvec_detail
