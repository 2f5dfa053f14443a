// Resources of the stage-boundary probes (vk_sync_probe.cpp): weights, two activation
// vectors that stages write in turn, the grid barrier's count, block scales, and the push
// block. PERSISTENT builds read the activations through `coherent` (other workgroups of
// the same dispatch wrote them) and synchronise with grid_barrier.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;

#if defined(PERSISTENT)
#define XQ coherent
#else
#define XQ
#endif

layout(std430, binding = 0) readonly buffer W { uvec4 w[]; };
layout(std430, binding = 1) XQ buffer A { float a[]; };
layout(std430, binding = 2) XQ buffer B { float b[]; };
layout(std430, binding = 1) XQ readonly buffer A4 { vec4 a4[]; };
layout(std430, binding = 2) XQ readonly buffer B4 { vec4 b4[]; };
layout(std430, binding = 3) coherent volatile buffer Sync { uint count; uint fault; uint sink; } sy;
layout(std430, binding = 4) readonly buffer Scales { uint scales[]; };  // float16 pairs

layout(push_constant) uniform Push {
  uint per_wg;       // stream stages: 16-byte words a workgroup streams per stage
  uint stage_words;  // 16-byte words between stages' weights (one stage's weights)
  uint slots;        // stage s reads weight slot s % slots (slots x stage_words fill the buffer)
  uint stage;        // first stage of this dispatch
  uint stages;       // stages in this dispatch (PERSISTENT), else 1
  uint rows, cols;   // matrix stages: the matrix's shape (cols a multiple of 32)
} pc;

#if defined(PERSISTENT)
// Every workgroup of the dispatch has arrived `target` times in all. Bounded: a spin past
// ~2^20 polls (about a second on a GPU) sets the fault word, after which no barrier waits
// (results then wrong, never a hang).
void grid_barrier(uint target) {
  memoryBarrierBuffer();
  barrier();
  if (gl_LocalInvocationID.x == 0u) {
    atomicAdd(sy.count, 1u);
    uint polls = 0u;
    while (sy.count < target && sy.fault == 0u) {
      if (++polls > (1u << 20)) {
        sy.fault = 1u;
        break;
      }
    }
  }
  barrier();
  memoryBarrierBuffer();
}
#endif
