// The ReLU^2-sparse FFN value product of the fast CPU backend. After ReLU^2 most hidden
// units of a trained model are exactly zero (about 88% in the demo model), and decode reads
// every weight byte once a token, so the value product y [C] = W [C x F] h [F] need only
// read the columns of W whose unit is non-zero. W is stored by rows, so the product reads a
// transposed copy made at load: row j holds column j of W, and a zero unit costs no bytes.
// Lossless: the copy moves the stored quants and scales (tensor/transpose.h); sums are
// float32.
#pragma once

#include <cstdint>
#include <vector>

#include "common/threadpool.h"
#include "model/model.h"

namespace rwkv {

class SparseFfnValue {
 public:
  // Whether W (C rows of F columns) of this type has a transposed form here: F32, F16,
  // BF16 (elements moved as they are), Q8_0 (int8 quants, a float16 scale plane), Q4_K
  // (4-bit quants two to a byte: C even), Q5_K, Q6_K (quants a byte each, their scale planes).
  static bool supports(TensorType type, int64_t C);
  // Bytes of the transposed copy of a C x F matrix of a supported type.
  static size_t copy_bytes(TensorType type, int64_t C, int64_t F);

  // Makes the transposed copy of W (a supported type).
  explicit SparseFfnValue(const Weight& W);

  size_t bytes() const {
    return quants_.size() + group_scales_.size() + group_mins_.size() +
           (group_d_.size() + super_d_.size() + super_dmin_.size()) * sizeof(uint16_t);
  }

  // y [T x C] = hidden [T x F] W^T, reading only the rows of the copy whose unit is
  // non-zero, when that reads fewer bytes than the dense product by a clear margin
  // (kSparseShare); otherwise returns false and leaves y as it was. The units are summed in
  // fixed chunks, so the result does not depend on the thread count.
  bool multiply(ThreadPool& pool, const float* hidden, int64_t T, float* y) const;

  // Share of the dense product's bytes below which the sparse product is taken: its reads
  // are runs of one row each, less regular than the dense stream.
  static constexpr double kSparseShare = 0.4;

 private:
  struct Unit {
    uint32_t index;  // hidden unit (row of the copy)
    float value;     // its non-zero activation
  };

  void sum_units(const Unit* begin, const Unit* end, float* out) const;

  // Adds the units of one group (sums of h q in `sums`, of h in `h_sum`) to out with the
  // group's scales.
  void add_group(int64_t group, const float* sums, float h_sum, float* out) const;

  TensorType type_;
  int64_t C_, F_;
  size_t dense_bytes_;
  // F rows of the C elements of one column of W each (the type's quants, or floats).
  std::vector<uint8_t> quants_;
  // Scale planes, a row of C values (one an output row) per group of units (Q8_0: float16 d
  // a block of 32; Q4_K, Q5_K: six-bit scales and mins a sub-block of 32; Q6_K: int8 scales a
  // group of 16) and per super-block of 256 units (Q4_K, Q5_K: float16 d and dmin; Q6_K: d).
  std::vector<uint16_t> group_d_;
  std::vector<uint8_t> group_scales_, group_mins_;
  std::vector<uint16_t> super_d_, super_dmin_;
};

}  // namespace rwkv
