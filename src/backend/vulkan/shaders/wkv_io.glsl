// Resources shared by the WKV shaders (wkv.comp, the fused form, and the prefill form
// wkv_prep.comp -> wkv_scan.comp -> wkv_post.comp). Activations [T x C] are rows of C floats
// in `act`; per-channel weights [C] are in `vecs`; a state slot holds the attention shift [C],
// the FFN shift [C], then the N x N WKV state of each head (S[h][i][j] at 2C + (h N + i) N + j).
layout(std430, set = 0, binding = 0) buffer Scratch { float act[]; };
layout(std430, set = 0, binding = 1) readonly buffer Vectors { float vecs[]; };
layout(std430, set = 0, binding = 2) buffer State { float state[]; };
// The same buffer as vec4: state rows of N floats are 16-byte aligned (slots and rows are
// multiples of 4 floats), so they move in wide accesses.
layout(std430, set = 0, binding = 2) buffer State4 { vec4 state4[]; };
layout(std430, set = 0, binding = 3) readonly buffer Meta { uint meta[]; };

layout(push_constant) uniform Push {
  uint C;
#if defined(LORA)
  // wkv.comp with the LoRA up-projections folded in (wkv_lora.glsl): in place of a, decay,
  // g and nu, the down projections' outputs they are computed from ([T x D], D the ranks)
  uint r, k, v, a_mid, w_mid, g_mid;
  uint v_mid;  // NONE on layer 0
#else
  uint r, k, v, a, decay, g;  // [T x C] inputs
  uint nu;                     // value-residual gate sigma(v0 + V2 V1 x_v), NONE on layer 0
#endif
  uint v_first;                // written on layer 0, read after
  uint xa;                     // ln1 output, source of the shift state
  uint out_;                   // [T x C] output, the input of W_o
  // NONE, or 5 consecutive [T x C] regions dbg_stride apart: kk (normalised), k_mod, v
  // (mixed), wkv (y = S'r), lnx. The fused form writes them for the debug hook; the prefill
  // form always (they carry its intermediates from one dispatch to the next).
  uint dbg;
  uint dbg_stride;
  uint k_k, k_a, r_k, lnx_w, lnx_b;  // in vecs
  float gn_eps;
  uint slot_stride;
  uint seq_start, seq_rows, seq_slot;  // per-sequence tables in meta
#if defined(LORA)
  uint w2_off, a2_off, g2_off, v2_off;  // bytes: the up matrices [C x D] in weight bindings 0..3
  uint w0, a0, v0;                      // their biases [C] in vecs (v0: layers > 0)
#endif
} pc;

#define DBG_KK 0u
#define DBG_KMOD 1u
#define DBG_V 2u
#define DBG_WKV 3u
#define DBG_LNX 4u
// Offset of element o of debug region `which`.
uint dbg_at(uint which, uint o) { return pc.dbg + which * pc.dbg_stride + o; }
