#version 450
// Prefill WKV, part 2 of 3: the WKV7 recurrence alone (spec §2.3). Workgroup (x, s) runs
// value rows [row0, row0 + RB) of head h of sequence s over the sequence's tokens in order,
// h = x / (N / RB), row0 = RB (x % (N / RB)): rows are independent given a token's vectors,
// so a head is split over N / RB workgroups. L invocations of one subgroup share a row, each
// keeping Q = N / L of its state columns in registers. Per token:
//   sa = sum_j alpha_j S_ij (the old state),  S_ij = S_ij d_j + v_i k_j + sa beta_j,
//   y_i = sum_j S_ij r_j,  with alpha = -kk, beta = kk a.
// sa is the only sum the state update waits for: the L parts meet in shared memory behind a
// subgroup barrier (only the basic and arithmetic subgroup operations are required of the
// device, so no shuffles; rows are assigned by subgroup id so a row never spans two
// subgroups). The parts of y go to shared memory and are summed once per chunk.
// Inputs: r, decay, a from the activations; kk, k_mod, v' from wkv_prep (debug regions).
// Output: y into the wkv debug region (wkv_post finishes the token), the state in place, and
// the attention shift state (the sequence's last ln1 row) for the workgroup's channels.
// Tokens are staged in shared memory CHUNK at a time: the next chunk's global loads are
// issued into registers before the current chunk's token loop and stored after it; each
// token's columns are read from shared memory one token ahead.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "wkv_io.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint NT = 128;    // RB L invocations
layout(constant_id = 1) const uint N = 64;      // head size
layout(constant_id = 2) const uint L = 8;       // invocations per row: 2, 4 or 8, N % 4L == 0
layout(constant_id = 3) const uint CHUNK = 16;  // tokens staged at a time
const uint RB = NT / L;       // rows per workgroup, divides N
const uint QV = N / L / 4u;   // vec4 of state columns per invocation
// vec4 per staged vector: each invocation's part followed by one vec4 of padding, so the L
// parts read at once fall in distinct banks.
const uint ROW = N / 4u + L;
const uint TASKS = (CHUNK * N / 4u + NT - 1u) / NT;    // (token, column vec4) copies per invocation
const uint VTASKS = (CHUNK * RB / 4u + NT - 1u) / NT;  // (token, row vec4) copies of v'

layout(std430, set = 0, binding = 0) buffer Scratch4 { vec4 act4[]; };

shared vec4 stage[5u * CHUNK * ROW];  // [vector][token][padded vec4]: r, decay, k_mod, alpha, beta
shared vec4 sv[CHUNK * RB / 4u];      // [token][row / 4]: v' of the workgroup's rows
shared float ys[CHUNK * RB * L];      // [token][row][lane]: parts of y
shared float sap[2u * RB * L];        // [token parity][row][lane]: parts of sa

uint h, row0, tid;
uint row, lane;  // this invocation's state row (0..RB-1) and its part of the columns

// The chunk in flight: per copy, the 16 bytes of r, decay, k_mod, kk, a (and of v').
vec4 pre[TASKS][5];
vec4 pre_v[VTASKS];

// Issues the loads of tokens [c0, c0 + n) (past n: token c0 + n - 1 again, never used).
void load_chunk(uint c0, uint n) {
  [[unroll]] for (uint u = 0u; u < TASKS; ++u) {
    uint e = tid + u * NT;
    uint t = min(e / (N / 4u), n - 1u);
    uint o = ((c0 + t) * pc.C + h * N) / 4u + e % (N / 4u);
    pre[u][0] = act4[pc.r / 4u + o];
    pre[u][1] = act4[pc.decay / 4u + o];
    pre[u][2] = act4[dbg_at(DBG_KMOD, 0u) / 4u + o];
    pre[u][3] = act4[dbg_at(DBG_KK, 0u) / 4u + o];
    pre[u][4] = act4[pc.a / 4u + o];
  }
  [[unroll]] for (uint u = 0u; u < VTASKS; ++u) {
    uint e = tid + u * NT;
    uint t = min(e / (RB / 4u), n - 1u);
    pre_v[u] = act4[(dbg_at(DBG_V, (c0 + t) * pc.C + h * N + row0)) / 4u + e % (RB / 4u)];
  }
}

// Stores the loaded chunk into shared memory, kk and a turned into alpha and beta.
void stash_chunk() {
  [[unroll]] for (uint u = 0u; u < TASKS; ++u) {
    uint e = tid + u * NT;
    if (e < CHUNK * N / 4u) {
      uint t = e / (N / 4u), q = e % (N / 4u);
      uint at = t * ROW + q + q / QV;
      stage[at] = pre[u][0];
      stage[CHUNK * ROW + at] = pre[u][1];
      stage[2u * CHUNK * ROW + at] = pre[u][2];
      stage[3u * CHUNK * ROW + at] = -pre[u][3];
      stage[4u * CHUNK * ROW + at] = pre[u][3] * pre[u][4];
    }
  }
  [[unroll]] for (uint u = 0u; u < VTASKS; ++u) {
    uint e = tid + u * NT;
    if (e < CHUNK * RB / 4u) sv[e] = pre_v[u];
  }
}

// y of tokens [c0, c0 + n): the sum of each row's L parts, in lane order.
void write_y(uint c0, uint n) {
  for (uint e = tid; e < n * RB; e += NT) {
    uint t = e / RB, i = e % RB;
    float y = 0.0;
    [[unroll]] for (uint l = 0u; l < L; ++l) y += ys[e * L + l];
    act[dbg_at(DBG_WKV, (c0 + t) * pc.C + h * N + row0 + i)] = y;
  }
}

vec4 st[QV];  // state row row0 + row, columns [lane Q, lane Q + Q)

// Two sets of this invocation's columns of a token's vectors (and its v'), read ahead of
// their use: set b is filled while the token in the other set is computed.
vec4 cr[2][QV], cd[2][QV], ck[2][QV], cal[2][QV], cbe[2][QV];
float cv[2];

void read_cols(uint b, uint t) {
  uint at = t * ROW + lane * (QV + 1u);
  [[unroll]] for (uint j = 0u; j < QV; ++j) {
    cal[b][j] = stage[3u * CHUNK * ROW + at + j];
    cd[b][j] = stage[CHUNK * ROW + at + j];
    ck[b][j] = stage[2u * CHUNK * ROW + at + j];
    cbe[b][j] = stage[4u * CHUNK * ROW + at + j];
    cr[b][j] = stage[at + j];
  }
  cv[b] = sv[t * (RB / 4u) + row / 4u][row % 4u];
}

// Token t (of the chunk) with the columns in set b.
void token(uint b, uint t) {
  vec4 p = cal[b][0] * st[0];
  [[unroll]] for (uint j = 1u; j < QV; ++j) p += cal[b][j] * st[j];
  uint at = (t & 1u) * RB * L + row * L;
  sap[at + lane] = (p.x + p.y) + (p.z + p.w);
  subgroupMemoryBarrierShared();
  subgroupBarrier();
  // The L parts added as a tree (a chain of L - 1 dependent adds would lengthen every step).
  float part[L];
  [[unroll]] for (uint l = 0u; l < L; ++l) part[l] = sap[at + l];
  [[unroll]] for (uint w = L / 2u; w > 0u; w /= 2u) {
    [[unroll]] for (uint l = 0u; l < w; ++l) part[l] += part[l + w];
  }
  float sa = part[0];
  vec4 y = vec4(0.0);
  [[unroll]] for (uint j = 0u; j < QV; ++j) {
    st[j] = st[j] * cd[b][j] + (cv[b] * ck[b][j] + sa * cbe[b][j]);
    y += st[j] * cr[b][j];
  }
  ys[(t * RB + row) * L + lane] = (y.x + y.y) + (y.z + y.w);
}

void main() {
  h = gl_WorkGroupID.x / (N / RB);
  row0 = gl_WorkGroupID.x % (N / RB) * RB;
  tid = gl_LocalInvocationID.x;
  uint linear = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
  row = linear / L;
  lane = linear % L;
  uint seq = gl_WorkGroupID.y;
  uint start = meta[pc.seq_start + seq], end = start + meta[pc.seq_rows + seq], slot = meta[pc.seq_slot + seq];
  uint sbase = (slot * pc.slot_stride + 2u * pc.C + (h * N + row0 + row) * N) / 4u + lane * QV;
  [[unroll]] for (uint j = 0u; j < QV; ++j) st[j] = state4[sbase + j];

  load_chunk(start, min(CHUNK, end - start));
  uint last = start, last_n = 0u;
  for (uint c0 = start; c0 < end; c0 += CHUNK) {
    uint n = min(CHUNK, end - c0);
    barrier();  // the last chunk's token loop is done with stage, sv and ys
    write_y(last, last_n);
    stash_chunk();
    barrier();
    if (c0 + CHUNK < end) load_chunk(c0 + CHUNK, min(CHUNK, end - c0 - CHUNK));
    read_cols(0u, 0u);
    for (uint t = 0u; t < n; t += 2u) {
      if (t + 1u < n) read_cols(1u, t + 1u);
      token(0u, t);
      if (t + 1u == n) break;
      if (t + 2u < n) read_cols(0u, t + 2u);
      token(1u, t + 1u);
    }
    last = c0;
    last_n = n;
  }
  barrier();
  write_y(last, last_n);

  [[unroll]] for (uint j = 0u; j < QV; ++j) state4[sbase + j] = st[j];
  for (uint i = tid; i < RB; i += NT) {
    uint c = h * N + row0 + i;
    state[slot * pc.slot_stride + c] = act[pc.xa + (end - 1u) * pc.C + c];
  }
}
