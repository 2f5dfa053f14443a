// The LoRA up-projections folded into the fused WKV (wkv.comp built with -DLORA, for decode
// and short sequences; spec §2.2 steps 4, 5, 7, 8): for its head h and one token row t, the
// workgroup computes, for the head's channels c = h N + i (i < N),
//   decay = exp(-e^-0.5 sigmoid(w0 + W2 w_mid)),  a = sigmoid(a0 + A2 a_mid),
//   g = G2 g_mid,  nu = sigmoid(v0 + V2 v_mid) (layers > 0)
// into lora_out [4 x N] (decay, a, g, nu), from rows hN .. hN+N-1 of the up matrices [C x D]
// (F32, F16, BF16 or Q8_0) and the down projections' outputs (w_mid [T x Dw], ...: tanh /
// sigmoid already applied by the matrix stage before).
//
// The N rows of a matrix are one run of N Q 16-byte quads (Q per row: D / 4 for F32, D / 8
// for the 16-bit types; Q8_0 rows as grouped at upload, grouped_layout.h: per group of up to 256
// columns a quad of scales, then a quad per 16 quants). Invocations tid < R Q, R = WG / Q rows
// per pass, hold quads tid, tid + R Q, ... of the run in registers (and for Q8_0 the word with
// each quad's block scale): coalesced loads, issued first thing in the shader (no earlier
// dispatch writes them). An invocation's quads are all quad e = tid % Q of their rows, so it
// loads the matching mid values once per token. Each quad's fp32 dot product with them
// (zero for a scale quad) becomes one partial sum in shared memory at row * S + e, S = Q made
// odd, so that the invocations summing rows (S words apart) read distinct banks; output j
// (matrix j / N, channel j % N) then sums its row's Q partials in order, adds the bias and
// applies the epilogue (common.glsl's activate, as the matrix stage does).
//
// Needs N, the push block (wkv_io.glsl with LORA) and common.glsl. Spec constants 1 .. 9.

layout(constant_id = 1) const uint WG = 256;  // invocations; the first N also run the recurrence
// GGUF type ids of W2, A2, G2, V2: 0 F32, 1 F16, 30 BF16, 8 Q8_0.
layout(constant_id = 2) const uint TYPE_W = 0u;
layout(constant_id = 3) const uint TYPE_A = 1u;
layout(constant_id = 4) const uint TYPE_G = 1u;
layout(constant_id = 5) const uint TYPE_V = 1u;
// Ranks (columns of the up matrices), multiples of 8 (Q8_0: of 32).
layout(constant_id = 6) const uint RANK_W = 64u;
layout(constant_id = 7) const uint RANK_A = 64u;
layout(constant_id = 8) const uint RANK_G = 128u;
layout(constant_id = 9) const uint RANK_V = 32u;

#define LORA_Q8_0 8u
// Quads of a grouped Q8_0 row of D columns: 17 per full group of 256, 1 + D % 256 / 16 for a
// last partial one.
#define Q8_QUADS(D) ((D) / 256u * 17u + ((D) % 256u != 0u ? 1u + (D) % 256u / 16u : 0u))
#define ROW_QUADS(type, D) ((type) == 0u ? (D) / 4u : (type) == LORA_Q8_0 ? Q8_QUADS(D) : (D) / 8u)

// Quads per row, partial-sum row strides, rows per pass (Q <= WG), quads per invocation.
const uint Q_W = ROW_QUADS(TYPE_W, RANK_W), Q_A = ROW_QUADS(TYPE_A, RANK_A);
const uint Q_G = ROW_QUADS(TYPE_G, RANK_G), Q_V = ROW_QUADS(TYPE_V, RANK_V);
const uint S_W = Q_W | 1u, S_A = Q_A | 1u, S_G = Q_G | 1u, S_V = Q_V | 1u;
const uint R_W = WG / Q_W, R_A = WG / Q_A, R_G = WG / Q_G, R_V = WG / Q_V;
const uint K_W = (N + R_W - 1u) / R_W;
const uint K_A = (N + R_A - 1u) / R_A;
const uint K_G = (N + R_G - 1u) / R_G;
const uint K_V = (N + R_V - 1u) / R_V;
// Where each matrix's partial sums start in `part`, and its quads in `wl`.
const uint P_A = N * S_W, P_G = P_A + N * S_A, P_V = P_G + N * S_G, P_END = P_V + N * S_V;
const uint L_A = K_W, L_G = L_A + K_A, L_V = L_G + K_G, L_END = L_V + K_V;

// The activations as vec4: the mid rows start 16-byte aligned (regions and ranks are
// multiples of 4 floats).
layout(std430, set = 0, binding = 0) buffer Scratch4 { vec4 act4[]; };
// W2, A2, G2, V2 (each matrix's buffer; offsets pc.w2_off ...), as quads and as words.
layout(std430, set = 0, binding = 4) readonly buffer LoraQuads { uvec4 w[]; } lora_w[4];
layout(std430, set = 0, binding = 4) readonly buffer LoraWords { uint w[]; } lora_w1[4];

shared float part[P_END];
shared float lora_out[4u * N];
// This invocation's weight quads, and for Q8_0 quads the word holding their block's scale
// (not unpacked here: that would wait for the load).
uvec4 wl[L_END];
uint wd[L_END];

// Quad k of this invocation in the run of head h of the matrix at byte `off` of binding b,
// into wl[at] and wd[at] (zeros past the run, and where `on` is false: V2 on layer 0). Every
// entry is written, so that none stays live from one token to the next.
void lora_quad(uint b, uint type, uint off, uint Q, uint R, uint h, uint k, bool on, uint at) {
  uint tid = gl_LocalInvocationID.x, e = tid % Q, row = tid / Q + k * R;
  wl[at] = uvec4(0u);
  wd[at] = 0u;
  if (!on || tid >= R * Q || row >= N) return;
  uint rq = (off >> 4) + (h * N + row) * Q;  // quad index of the row's start
  wl[at] = lora_w[b].w[rq + e];
  uint r = e % 17u;  // Q8_0: quad r of its group, the scales' quad when 0
  if (type == LORA_Q8_0 && r != 0u) {
    // The scale of block (r - 1) / 2 of group e / 17, at byte 2 (r - 1) / 2 of the group.
    wd[at] = lora_w1[b].w[(rq * 16u + e / 17u * 272u + (r - 1u) / 2u * 2u) >> 2];
  }
}

void lora_load(uint h) {
  bool v = pc.v_mid != NONE;
  for (uint k = 0u; k < K_W; ++k) lora_quad(0u, TYPE_W, pc.w2_off, Q_W, R_W, h, k, true, k);
  for (uint k = 0u; k < K_A; ++k) lora_quad(1u, TYPE_A, pc.a2_off, Q_A, R_A, h, k, true, L_A + k);
  for (uint k = 0u; k < K_G; ++k) lora_quad(2u, TYPE_G, pc.g2_off, Q_G, R_G, h, k, true, L_G + k);
  for (uint k = 0u; k < K_V; ++k) lora_quad(3u, TYPE_V, pc.v2_off, Q_V, R_V, h, k, v, L_V + k);
}

vec2 lora_bf16x2(uint q) { return uintBitsToFloat(uvec2(q << 16, q & 0xFFFF0000u)); }
vec4 lora_i8x4(uint q) {
  int s = int(q);
  return vec4(bitfieldExtract(s, 0, 8), bitfieldExtract(s, 8, 8), bitfieldExtract(s, 16, 8), bitfieldExtract(s, 24, 8));
}

// This invocation's partial sums of one matrix (entries L .. L + K - 1 of wl and wd) for
// token row t of its mid region (`mid`, rank D): the fp32 dot products of its quads with the
// mid values x of quad-in-row e, 4 from column 4e (F32), 8 from 8e (16-bit), 16 of a Q8_0
// block times its scale (none for a scale quad).
void lora_partials(uint type, uint Q, uint R, uint S, uint P, uint L, uint K, uint mid, uint D, uint t) {
  uint tid = gl_LocalInvocationID.x, e = tid % Q;
  if (tid >= R * Q) return;
  uint m = (mid + t * D) >> 2, r = e % 17u;
  vec4 x[4];
  if (type == 0u) {
    x[0] = act4[m + e];
  } else if (type == LORA_Q8_0) {
    uint c = m + e / 17u * 64u + (r - 1u) * 4u;  // columns 256 (e / 17) + 16 (r - 1) ...
    for (uint i = 0u; i < 4u; ++i) x[i] = r != 0u ? act4[c + i] : vec4(0.0);
  } else {
    x[0] = act4[m + 2u * e];
    x[1] = act4[m + 2u * e + 1u];
  }
  for (uint k = 0u; k < K; ++k) {
    uint row = tid / Q + k * R;
    if (row >= N) continue;  // the last pass's rows past the head
    uvec4 w = wl[L + k];
    float p;
    if (type == 0u) {
      p = dot(uintBitsToFloat(w), x[0]);
    } else if (type == LORA_Q8_0) {
      float d = unpackHalf2x16(wd[L + k] >> (((r - 1u) / 2u & 1u) * 16u)).x;
      p = d * (dot(lora_i8x4(w.x), x[0]) + dot(lora_i8x4(w.y), x[1]) + dot(lora_i8x4(w.z), x[2]) +
               dot(lora_i8x4(w.w), x[3]));
    } else if (type == 1u) {
      p = dot(vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y)), x[0]) +
          dot(vec4(unpackHalf2x16(w.z), unpackHalf2x16(w.w)), x[1]);
    } else {
      p = dot(vec4(lora_bf16x2(w.x), lora_bf16x2(w.y)), x[0]) + dot(vec4(lora_bf16x2(w.z), lora_bf16x2(w.w)), x[1]);
    }
    part[P + row * S + e] = p;
  }
}

// The bias of output j (0 for g, and for nu on layer 0).
float lora_bias(uint j, uint h) {
  uint c = h * N + j % N;
  if (j < N) return vecs[pc.w0 + c];
  if (j < 2u * N) return vecs[pc.a0 + c];
  if (j < 3u * N || pc.v_mid == NONE) return 0.0;
  return vecs[pc.v0 + c];
}

// Output j: its row's partial sums in order, plus the bias, through the epilogue. One loop
// for the four matrices (a warp's outputs share one when N is a multiple of its width).
float lora_output(uint j, float bias) {
  uint m = j / N, i = j % N;
  uint q = m == 0u ? Q_W : m == 1u ? Q_A : m == 2u ? Q_G : Q_V;
  uint p = m == 0u ? i * S_W : m == 1u ? P_A + i * S_A : m == 2u ? P_G + i * S_G : P_V + i * S_V;
  float z = 0.0;
  for (uint e = 0u; e < q; ++e) z += part[p + e];
  return activate(z + bias, m == 0u ? ACT_DECAY : m == 2u ? ACT_NONE : ACT_SIGMOID);
}

// lora_out for token row t from the quads in wl. Every invocation must call it (two
// barriers, the first also guarding `part` against the last token's readers); `bias` is
// lora_bias(tid, h) (loaded once, ahead).
void lora_sums(uint h, uint t, float bias) {
  lora_partials(TYPE_W, Q_W, R_W, S_W, 0u, 0u, K_W, pc.w_mid, RANK_W, t);
  lora_partials(TYPE_A, Q_A, R_A, S_A, P_A, L_A, K_A, pc.a_mid, RANK_A, t);
  lora_partials(TYPE_G, Q_G, R_G, S_G, P_G, L_G, K_G, pc.g_mid, RANK_G, t);
  if (pc.v_mid != NONE) lora_partials(TYPE_V, Q_V, R_V, S_V, P_V, L_V, K_V, pc.v_mid, RANK_V, t);
  barrier();
  uint outs = pc.v_mid != NONE ? 4u * N : 3u * N, tid = gl_LocalInvocationID.x;
  if (tid < outs) lora_out[tid] = lora_output(tid, bias);
  for (uint j = tid + WG; j < outs; j += WG) lora_out[j] = lora_output(j, lora_bias(j, h));
  barrier();
}
