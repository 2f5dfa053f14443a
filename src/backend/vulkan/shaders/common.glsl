// Helpers shared by every compute shader: workgroup reductions built on subgroup
// arithmetic, and the activations applied in matrix-product epilogues.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require

// Upper bound on subgroups per workgroup: 256 invocations / a minimum subgroup size of 4
// (the host refuses devices with smaller subgroups).
#define RED_MAX 64u
// "No such buffer region": an offset that disables an optional input or output.
#define NONE 0xFFFFFFFFu

shared vec2 red_sh[RED_MAX];

// Sum of v over the workgroup, returned to every invocation. Every invocation of the
// workgroup must call it (uniform control flow); the summation order is fixed.
vec2 wg_sum2(vec2 v) {
  v = subgroupAdd(v);
  if (subgroupElect()) red_sh[gl_SubgroupID] = v;
  barrier();
  vec2 s = vec2(0.0);
  for (uint i = 0u; i < gl_NumSubgroups; ++i) s += red_sh[i];
  barrier();
  return s;
}
float wg_sum(float v) { return wg_sum2(vec2(v, 0.0)).x; }

// Epilogue activations of the matrix products (the low byte of a job's flags).
#define ACT_NONE 0u
#define ACT_TANH 1u
#define ACT_SIGMOID 2u
#define ACT_RELU_SQ 3u
#define ACT_DECAY 4u  // decay = exp(-e^-0.5 * sigmoid(z)), spec §2.2 step 4, in fp32

float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }

float activate(float x, uint act) {
  if (act == ACT_TANH) return tanh(clamp(x, -15.0, 15.0));  // tanh(15) is 1 in fp32; avoids inf/inf
  if (act == ACT_SIGMOID) return sigmoid(x);
  if (act == ACT_RELU_SQ) {
    float r = max(x, 0.0);
    return r * r;
  }
  if (act == ACT_DECAY) return exp(-0.6065306597126334 * sigmoid(x));
  return x;
}
