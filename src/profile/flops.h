// FLOPs of the ops that do the arithmetic of a training step, from their input shapes: matrix
// products (mm, addmm, bmm, baddbmm, matmul, linear), convolutions (forward and backward) and so
// the attention pieces (q k^T and att v run as matmul -> bmm). One multiply-add counts 2 FLOPs;
// a bias add or softmax is not counted (bandwidth-bound, a rounding error in FLOPs), so MFU
// compares the same matrix-product FLOPs that the peak GEMM measures.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace blocklab {

/// One argument of a recorded op, as far as FLOP counting and the tables need it.
struct OpInput {
  enum class Kind : uint8_t { Tensor, IntList, Scalar, TensorList, None, Other };
  Kind kind = Kind::Other;
  std::vector<int64_t> v;  // Tensor: sizes; IntList: values (bools as 0/1); Scalar: {value}; TensorList: {count}

  static OpInput tensor(std::vector<int64_t> sizes) { return {Kind::Tensor, std::move(sizes)}; }
  static OpInput ints(std::vector<int64_t> values) { return {Kind::IntList, std::move(values)}; }
  static OpInput scalar(int64_t value) { return {Kind::Scalar, {value}}; }
};

/// FLOPs of one call of op `name` (e.g. "aten::mm") with these arguments; 0 for ops not counted
/// or arguments that do not fit the op's schema.
int64_t op_flops(const std::string& name, const std::vector<OpInput>& inputs);

/// Whether `name` is an op whose FLOPs op_flops counts (so tables can tell 0 from "not counted").
bool counts_flops(const std::string& name);

/// "[128, 18, 64], [192, 64], []": tensor sizes of the arguments, other arguments left out.
std::string shapes_string(const std::vector<OpInput>& inputs);

}  // namespace blocklab
