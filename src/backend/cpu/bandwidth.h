// The host memory's copy bandwidth: Backend::measure_bandwidth of the two CPU backends.
#pragma once

namespace rwkv {

class ThreadPool;

// GB/s of a copy between two 256 MiB buffers (larger than any CPU cache), bytes read plus
// bytes written, the best of three copies; split over `pool`'s threads, or on the calling
// thread alone where pool is null.
double host_copy_bandwidth(ThreadPool* pool);

}  // namespace rwkv
