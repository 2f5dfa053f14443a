// Host side of the persistent decode kernel (persistent.h): the jobs of every stage, their
// tiles, and which block streams which tiles. Built once per scratch allocation (the jobs
// point into it) and kept on the device.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>

#include "backend/cuda/backend_impl.h"
#include "backend/cuda/persistent.h"

namespace rwkv::cuda {
namespace {

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

struct PlannedTile {
  PTile tile;
  size_t bytes;
};

// Rows a tile must be a multiple of, so that every plane's piece is a multiple of 16 bytes.
int64_t row_align(const PackedLayout& L) {
  int64_t m = 1;
  for (int p = 0; p < L.n_planes; ++p) m = std::max<int64_t>(m, 16 / std::gcd<int64_t>(int64_t(L.plane_stride[p]), 16));
  return m;
}
size_t row_bytes(const PackedLayout& L) {
  size_t b = 0;
  for (int p = 0; p < L.n_planes; ++p) b += L.plane_stride[p];
  return b;
}
bool quantised_type(TensorType t) { return t != TensorType::F32 && t != TensorType::F16 && t != TensorType::BF16; }

}  // namespace

void CudaBackend::build_persistent() {
  persistent_ = PersistentPlan{};
  persistent_.key = scratch_.buffer.data();
  persistent_.states = states_.data();
  // Opt-in: measured slower than the per-op kernels so far (NOTES.md, runs 15-22).
  const char* env = std::getenv("RWKV_CUDA_PERSISTENT");
  if (!env || std::string(env) != "1") return;
  int max_smem = 0;
  if (!persistent_available(&max_smem)) return;
  const int C = hp_.n_embd, F = hp_.n_ffn, N = hp_.head_size, H = hp_.n_head, NL = hp_.n_layer;
  if (N != 64 || C % 32 != 0 || C > 4096 || size_t(C) * 4 * 2 > size_t(max_smem) / 4) return;
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_) != cudaSuccess) return;
  const size_t per_layer = hp_.state_floats_per_layer();
  Scratch& s = scratch_;

  // Jobs, grouped by stage.
  std::vector<PJob> jobs;
  std::vector<std::vector<std::vector<int>>> stage_jobs(NL, std::vector<std::vector<int>>(kPersistentStages));
  auto add = [&](int l, int kind, const Mat& W, PIn in, const float* x, const float* mix_w, InOp in_op, POut out,
                 float* y, const float* bias, int64_t shift_off) {
    PJob j;
    j.W = W.view();
    j.in = in;
    j.x = x;
    j.mix_w = mix_w;
    j.in_op = in_op;
    j.out = out;
    j.y = y;
    j.bias = bias;
    j.shift_off = shift_off;
    stage_jobs[l][kind].push_back(int(jobs.size()));
    jobs.push_back(j);
  };
  const InOp no = InOp::none;
  for (int l = 0; l < NL; ++l) {
    const LayerDev& L = layers_[l];
    const float* mix = L.att_mix;  // [6 x C]: r, w, k, v, a, g
    const int64_t att_off = int64_t(l * per_layer), ffn_off = att_off + C;
    add(l, 0, L.wr, PIn::lerp, nullptr, mix + 0 * C, no, POut::store, s.r, nullptr, 0);
    add(l, 0, L.wk, PIn::lerp, nullptr, mix + 2 * C, no, POut::store, s.k, nullptr, 0);
    add(l, 0, L.wv, PIn::lerp, nullptr, mix + 3 * C, no, POut::store, s.v, nullptr, 0);
    add(l, 0, L.w1, PIn::lerp, nullptr, mix + 1 * C, no, POut::store, s.w_lo, nullptr, 0);
    add(l, 0, L.a1, PIn::lerp, nullptr, mix + 4 * C, no, POut::store, s.a_lo, nullptr, 0);
    add(l, 0, L.g1, PIn::lerp, nullptr, mix + 5 * C, no, POut::store, s.g_lo, nullptr, 0);
    if (l > 0) add(l, 0, L.v1, PIn::lerp, nullptr, mix + 3 * C, no, POut::store, s.v_lo, nullptr, 0);
    add(l, 1, L.w2, PIn::vec, s.w_lo, nullptr, InOp::tanh, POut::decay, s.decay, L.w0, 0);
    add(l, 1, L.a2, PIn::vec, s.a_lo, nullptr, no, POut::sigmoid, s.a, L.a0, 0);
    add(l, 1, L.g2, PIn::vec, s.g_lo, nullptr, InOp::sigmoid, POut::store, s.g, nullptr, 0);
    if (l > 0) add(l, 1, L.v2, PIn::vec, s.v_lo, nullptr, no, POut::sigmoid, s.nu, L.v0, 0);
    add(l, 3, L.wo, PIn::vec, s.xo, nullptr, no, POut::add_shift, s.h, nullptr, att_off);
    add(l, 4, L.ffn_key, PIn::lerp, nullptr, L.ffn_mix, no, POut::relu_sq, s.hidden, nullptr, 0);
    add(l, 5, L.ffn_value, PIn::vec, s.hidden, nullptr, no, POut::add_shift, s.h, nullptr, ffn_off);
  }

  // Shared memory: staged activations, then the ring gets what is left.
  PersistentArgs a{};
  a.C = C;
  a.F = F;
  a.H = H;
  a.N = N;
  size_t act = 0, slot_min = size_t(N) * N * 4;  // a WKV state slice
  for (const PJob& j : jobs) {
    const size_t cols = size_t(j.W.cols);
    if (cols > 16384) return;  // kMaxStageCols of persistent.cu
    act = std::max(act, quantised_type(j.W.type) ? 2 * cols + 16 * (cols / 32) : 4 * cols);
    const PackedLayout pl = packed_layout(j.W.type, j.W.rows, j.W.cols);
    slot_min = std::max(slot_min, size_t(row_align(pl)) * row_bytes(pl));
  }
  // Slots of a whole number of the longest rows, about 24 KiB: the other matrices' rows
  // (a divisor of it in the real shapes) then fill them too.
  size_t slot_bytes = slot_min * std::max<size_t>(1, (24 << 10) / slot_min);
  if (const char* e = std::getenv("RWKV_CUDA_PERSISTENT_SLOT")) slot_bytes = std::max(slot_min, size_t(std::atol(e)));
  slot_bytes = round_up(slot_bytes, 128);
  a.act_bytes = int(act);
  a.slot_bytes = int(slot_bytes);
  a.slots = 1;
  const size_t fixed = persistent_smem_bytes(a) - slot_bytes;
  if (fixed + 3 * (slot_bytes + 16) > size_t(max_smem)) return;
  a.slots = int((size_t(max_smem) - fixed) / (slot_bytes + 16));
  while (persistent_smem_bytes(a) > size_t(max_smem)) --a.slots;

  // Tiles per stage, dealt to blocks in contiguous runs (few jobs per block, so few input
  // stagings) sized so that each block's bytes over the whole step come out even.
  const int blocks = sms, G = NL * kPersistentStages;
  std::vector<std::vector<std::vector<PTile>>> per_block(blocks, std::vector<std::vector<PTile>>(G));
  std::vector<double> load(blocks, 0.0);
  for (int l = 0; l < NL; ++l) {
    for (int kind = 0; kind < kPersistentStages; ++kind) {
      std::vector<PlannedTile> tiles;
      if (kind == 2) {
        for (int h = 0; h < H; ++h) {
          PlannedTile t{};
          const size_t off = (size_t(l) * per_layer + 2 * size_t(C) + size_t(h) * N * N) * sizeof(float);
          t.tile.src[0] = reinterpret_cast<const uint8_t*>(off);
          t.tile.bytes[0] = uint32_t(N * N * sizeof(float));
          t.tile.job = -1;
          t.tile.row0 = h;
          t.tile.nr = 1;
          t.tile.layer = l;
          t.bytes = t.tile.bytes[0];
          tiles.push_back(t);
        }
      } else {
        size_t stage_bytes = 0;
        for (int ji : stage_jobs[l][kind]) {
          const PackedLayout pl = packed_layout(jobs[ji].W.type, jobs[ji].W.rows, jobs[ji].W.cols);
          stage_bytes += row_bytes(pl) * size_t(pl.rows);
        }
        for (int ji : stage_jobs[l][kind]) {
          const PJob& j = jobs[ji];
          const PackedLayout pl = packed_layout(j.W.type, j.W.rows, j.W.cols);
          const int64_t m = row_align(pl), rb = int64_t(row_bytes(pl));
          const int64_t cap = std::min<int64_t>(64, int64_t(slot_bytes) / rb) / m * m;
          if (cap < 1) return;
          // About eight tiles per block and stage: one per consumer warp.
          const int64_t fair = (int64_t(stage_bytes / size_t(blocks) / 8) / rb + m) / m * m;
          const int64_t nr = std::max(m, std::min(cap, fair));
          for (int64_t r0 = 0; r0 < pl.rows; r0 += nr) {
            const int64_t n = std::min(nr, pl.rows - r0);
            PlannedTile t{};
            for (int p = 0; p < pl.n_planes; ++p) {
              t.tile.src[p] = j.W.plane[p] + size_t(r0) * pl.plane_stride[p];
              t.tile.bytes[p] = uint32_t(round_up(size_t(n) * pl.plane_stride[p], 16));
              t.bytes += t.tile.bytes[p];
            }
            t.tile.job = ji;
            t.tile.row0 = int32_t(r0);
            t.tile.nr = int32_t(n);
            t.tile.layer = l;
            tiles.push_back(t);
          }
        }
      }
      // Each block gets an equal share of the stage's bytes (a stage ends with its slowest
      // block), in contiguous runs; where tiles do not divide evenly, the blocks that carry
      // the least so far take the extra ones.
      double total = 0.0;
      for (const PlannedTile& t : tiles) total += double(t.bytes);
      std::vector<int> order(blocks);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return load[x] < load[y]; });
      std::vector<int> rank(blocks);
      for (int i = 0; i < blocks; ++i) rank[order[i]] = i;
      const int g = l * kPersistentStages + kind;
      size_t ti = 0;
      double done = 0.0;
      for (int b = 0; b < blocks && ti < tiles.size(); ++b) {
        // cut between (b+1)/blocks of the stage, nudged toward the lightly loaded blocks
        const double cut = total * (b + 1) / blocks + (rank[b] < blocks / 2 ? 0.49 : -0.49) * double(tiles[ti].bytes);
        while (ti < tiles.size() && (done + 0.5 * double(tiles[ti].bytes) <= cut || b == blocks - 1)) {
          per_block[b][g].push_back(tiles[ti].tile);
          load[b] += double(tiles[ti].bytes);
          done += double(tiles[ti].bytes);
          ++ti;
        }
      }
    }
  }

  std::vector<PTile> all;
  std::vector<int2> segs;
  std::vector<int32_t> begin(size_t(blocks) * (G + 1)), seg_begin(size_t(blocks) * (G + 1));
  for (int b = 0; b < blocks; ++b) {
    for (int g = 0; g < G; ++g) {
      begin[size_t(b) * (G + 1) + g] = int32_t(all.size());
      seg_begin[size_t(b) * (G + 1) + g] = int32_t(segs.size());
      for (size_t i = 0; i < per_block[b][g].size(); ++i) {
        const PTile& t = per_block[b][g][i];
        if (i == 0 || t.job != per_block[b][g][i - 1].job) segs.push_back(make_int2(int(all.size()), t.job));
        all.push_back(t);
      }
    }
    begin[size_t(b) * (G + 1) + G] = int32_t(all.size());
    seg_begin[size_t(b) * (G + 1) + G] = int32_t(segs.size());
  }
  std::vector<PLayer> players(NL);
  for (int l = 0; l < NL; ++l) {
    const LayerDev& L = layers_[l];
    PLayer& p = players[l];
    p.att_ln_w = L.att_ln_w;
    p.att_ln_b = L.att_ln_b;
    p.ffn_ln_w = L.ffn_ln_w;
    p.ffn_ln_b = L.ffn_ln_b;
    p.k_k = L.k_k;
    p.k_a = L.k_a;
    p.r_k = L.r_k;
    p.lnx_w = L.lnx_w;
    p.lnx_b = L.lnx_b;
    p.att_shift_off = int64_t(l * per_layer);
    p.ffn_shift_off = int64_t(l * per_layer) + C;
    p.first = l == 0;
  }

  // One device buffer: tiles, stage starts, jobs, layers, counters.
  const size_t o_tiles = 0, o_begin = round_up(all.size() * sizeof(PTile), 256);
  const size_t o_segs = o_begin + round_up(begin.size() * 4, 256);
  const size_t o_seg_begin = o_segs + round_up(segs.size() * sizeof(int2), 256);
  const size_t o_jobs = o_seg_begin + round_up(seg_begin.size() * 4, 256);
  const size_t o_layers = o_jobs + round_up(jobs.size() * sizeof(PJob), 256);
  const size_t o_sync = o_layers + round_up(players.size() * sizeof(PLayer), 256);
  persistent_.buffer = DeviceBuffer(o_sync + round_up(size_t(G) * 4, 256));
  uint8_t* base = persistent_.buffer.as<uint8_t>();
  persistent_.buffer.upload(all.data(), all.size() * sizeof(PTile), o_tiles);
  persistent_.buffer.upload(begin.data(), begin.size() * 4, o_begin);
  persistent_.buffer.upload(segs.data(), segs.size() * sizeof(int2), o_segs);
  persistent_.buffer.upload(seg_begin.data(), seg_begin.size() * 4, o_seg_begin);
  persistent_.buffer.upload(jobs.data(), jobs.size() * sizeof(PJob), o_jobs);
  persistent_.buffer.upload(players.data(), players.size() * sizeof(PLayer), o_layers);
  a.tiles = reinterpret_cast<const PTile*>(base + o_tiles);
  a.stage_begin = reinterpret_cast<const int32_t*>(base + o_begin);
  a.segs = reinterpret_cast<const int2*>(base + o_segs);
  a.seg_begin = reinterpret_cast<const int32_t*>(base + o_seg_begin);
  a.jobs = reinterpret_cast<const PJob*>(base + o_jobs);
  a.layers = reinterpret_cast<const PLayer*>(base + o_layers);
  a.sync = reinterpret_cast<uint32_t*>(base + o_sync);
  a.blocks = blocks;
  a.stages = G;
  a.ln_eps = hp_.ln_eps;
  a.gn_eps = hp_.gn_eps;
  a.h = s.h;
  a.r = s.r;
  a.k = s.k;
  a.v = s.v;
  a.a = s.a;
  a.decay = s.decay;
  a.g = s.g;
  a.nu = s.nu;
  a.v_first = s.v_first;
  a.xo = s.xo;
  a.states = states_.as<float>();
  a.seq_slot = s.ints + 3 * size_t(s.rows) + 1;
  a.state_floats = int64_t(hp_.state_floats());
  const char* trace = std::getenv("RWKV_CUDA_PERSISTENT_TRACE");
  if (trace && std::string(trace) == "1") {
    persistent_.trace = DeviceBuffer(size_t(blocks) * G * 5 * sizeof(uint64_t));
    a.trace = persistent_.trace.as<uint64_t>();
  }
  persistent_.args = a;
  persistent_.ready = true;
  if (verbose_)
    std::fprintf(stderr, "cuda: persistent decode: %d blocks, %d slots of %d bytes, %zu tiles\n", blocks, a.slots,
                 a.slot_bytes, all.size());
}

}  // namespace rwkv::cuda

namespace rwkv::cuda {

// Mean over layers of: the wait before a stage (from the block's arrival to the last
// block's signal of the previous stage being seen), the stage's work, and the signal; and
// the step's span. Block-averaged, per stage kind.
void CudaBackend::report_persistent_trace() {
  if (!persistent_.ready || !persistent_.args.trace) return;
  const PersistentArgs& a = persistent_.args;
  const int B = a.blocks, G = a.stages;
  std::vector<uint64_t> t(size_t(B) * G * 5);
  persistent_.trace.download(t.data(), t.size() * sizeof(uint64_t));
  auto at = [&](int b, int g, int p) { return double(t[(size_t(b) * G + g) * 5 + p]); };
  double wait[kPersistentStages] = {}, work[kPersistentStages] = {}, sig[kPersistentStages] = {},
         seen[kPersistentStages] = {}, starved[kPersistentStages] = {};
  for (int g = 0; g < G; ++g) {
    double last_signal = 0;  // when the last block finished signalling stage g - 1
    if (g > 0)
      for (int b = 0; b < B; ++b) last_signal = std::max(last_signal, at(b, g - 1, 3));
    for (int b = 0; b < B; ++b) {
      const int k = g % kPersistentStages;
      wait[k] += at(b, g, 1) - at(b, g, 0);
      work[k] += at(b, g, 2) - at(b, g, 1);
      sig[k] += at(b, g, 3) - at(b, g, 2);
      starved[k] += at(b, g, 4);
      if (g > 0) seen[k] += at(b, g, 1) - last_signal;
    }
  }
  double first = at(0, 0, 0), last = 0;
  for (int b = 0; b < B; ++b) {
    first = std::min(first, at(b, 0, 0));
    last = std::max(last, at(b, G - 1, 3));
  }
  const double n = double(B) * (G / kPersistentStages) * 1000.0;  // -> microseconds per stage
  std::fprintf(stderr,
               "persistent trace: step %.1f us; per stage (us): kind wait+ln work signal after-last-signal "
               "tile-wait\n",
               (last - first) / 1000.0);
  const char* names = "ABCDEF";
  for (int k = 0; k < kPersistentStages; ++k)
    std::fprintf(stderr, "  %c %8.2f %8.2f %8.2f %8.2f %8.2f\n", names[k], wait[k] / n, work[k] / n, sig[k] / n,
                 seen[k] / n, starved[k] / n);
}

}  // namespace rwkv::cuda
