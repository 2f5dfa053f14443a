#version 450
// dst = src, n 16-byte words, by a grid of workgroups striding over the buffers with four
// loads in flight an invocation: the memory's copy bandwidth for Backend::measure_bandwidth
// (vkCmdCopyBuffer does not show it: on NVIDIA's driver it moved a fifth of what shaders do).
layout(local_size_x = 256) in;
layout(std430, set = 0, binding = 0) readonly buffer Src { uvec4 src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { uvec4 dst[]; };
layout(push_constant) uniform Push { uint n; } pc;

void main() {
  uint stride = gl_NumWorkGroups.x * 256u;
  uint i = gl_GlobalInvocationID.x;
  for (; i + 3u * stride < pc.n; i += 4u * stride) {
    uvec4 a = src[i], b = src[i + stride], c = src[i + 2u * stride], d = src[i + 3u * stride];
    dst[i] = a;
    dst[i + stride] = b;
    dst[i + 2u * stride] = c;
    dst[i + 3u * stride] = d;
  }
  for (; i < pc.n; i += stride) dst[i] = src[i];
}
