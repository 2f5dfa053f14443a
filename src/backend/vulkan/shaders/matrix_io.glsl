// Resources shared by the matrix-product shaders. A job is one weight matrix (or one row
// range of it) applied to T activation rows: y[t][row] = act(sum_c W[row][c] x[t][c] + bias[row]).
// Offsets of x, y and bias are in floats; w_off and row_bytes in bytes of buffer `wbind`.
struct Job {
  uint wbind;      // which of the four weight bindings holds W
  uint w_off;      // byte offset of row 0
  uint row_bytes;  // bytes per row
  uint rows;       // output rows of this job
  uint cols;       // inner dimension, a multiple of 8
  uint x_off;      // x row t starts at x_off + t * x_stride (a multiple of 4)
  uint x_stride;
  uint y_off;      // y[t][r] at y_off + t * y_stride + r
  uint y_stride;
  uint flags;      // low byte: ACT_*; JOB_GATHER: x row t is meta[gather_off + t]
  uint bias_off;   // NONE or offset in vecs
  uint type;       // GGUF type id of W (the host's; each shader is built for one type)
  float x_scale;   // the tensor-core path multiplies x by this before rounding it to float16
  uint tile_base;  // tiled matmul: the job's first row tile (of 128 rows) among its dispatch's jobs
  uint y_base;     // y_off of the job's whole matrix (its pieces' y_off add their first row)
  uint pad2;
};
#define JOB_GATHER 0x100u

// Elements [e, e+8) and [e, e+16) of a row of the job's matrix (see dequant.glsl). Q8_0
// shaders have no DQ16: their 16-element units are read by dq16_q8_0_unscaled.
#define DQ8(jb, rb, e, lo, hi) dq8(jb.wbind, rb, e, lo, hi)
#if !defined(TYPE_Q8_0)
#define DQ16(jb, rb, e, v0, v1, v2, v3) dq16(jb.wbind, rb, e, v0, v1, v2, v3)
#endif

layout(std430, set = 0, binding = 1) readonly buffer Vectors { float vecs[]; };
layout(std430, set = 0, binding = 2) readonly buffer X { vec4 x4[]; };
layout(std430, set = 0, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, set = 0, binding = 4) readonly buffer Jobs { Job jobs[]; };
layout(std430, set = 0, binding = 5) readonly buffer Meta { uint meta[]; };

layout(push_constant) uniform Push {
  uint job_base;    // jobs[job_base + z] is the job of workgroup z (matvec: y; matmul: z / splits)
  uint n_tok;       // T, activation rows
  uint gather_off;  // where the gathered row indices start in meta
  uint splits;      // matmul: K splits per job (1: none)
  uint count_off;   // matmul, split K: its tile counters in binding 6 (words)
  uint part_off;    // matmul, split K: its partial sums in binding 6 (vec4 units)
} pc;

// The vec4 index where activation row t of job `jb` starts.
uint x_row(Job jb, uint t) {
  uint src = (jb.flags & JOB_GATHER) != 0u ? meta[pc.gather_off + t] : t;
  return (jb.x_off + src * jb.x_stride) >> 2;
}

void store(Job jb, uint t, uint row, float acc) {
  if (jb.bias_off != NONE) acc += vecs[jb.bias_off + row];
  y[jb.y_off + t * jb.y_stride + row] = activate(acc, jb.flags & 0xFFu);
}
