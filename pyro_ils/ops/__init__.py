"""Tensor operations: softmax, simplex maps, the exact draw with a swapped backward,
and the differentiable index tensor."""
