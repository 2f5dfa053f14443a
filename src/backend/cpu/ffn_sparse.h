// The ReLU^2-sparse FFN value product of the fast CPU backend. After ReLU^2 most hidden
// units of a trained model are exactly zero (about 88% in the demo model), and decode reads
// every weight byte once a token, so the value product y [C] = W [C x F] h [F] need only
// read the columns of W whose unit is non-zero. W is stored by rows, so the product reads a
// transposed copy made at load: row j holds column j of W, and a zero unit costs no bytes.
// Lossless: the copy moves the stored bytes (tensor/transpose.h); sums are float32.
#pragma once

#include <cstdint>
#include <vector>

#include "common/threadpool.h"
#include "model/model.h"

namespace rwkv {

class SparseFfnValue {
 public:
  // Whether W (C rows of F columns) of this type has a transposed form here: F32, F16,
  // BF16 (elements moved as they are) and Q8_0 (int8 quants, a float16 scale plane).
  static bool supports(TensorType type);
  // Bytes of the transposed copy of a C x F matrix of a supported type.
  static size_t copy_bytes(TensorType type, int64_t C, int64_t F);

  // Makes the transposed copy of W (a supported type).
  explicit SparseFfnValue(const Weight& W);

  size_t bytes() const { return elements_.size() + scales_.size() * sizeof(uint16_t); }

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

  TensorType type_;
  int64_t C_, F_;
  size_t dense_bytes_;
  std::vector<uint8_t> elements_;  // F rows of C elements (Q8_0: int8 quants)
  std::vector<uint16_t> scales_;   // Q8_0: F / 32 rows of C float16 scales
};

}  // namespace rwkv
