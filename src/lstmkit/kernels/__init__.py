"""Kernels: pure functions on tensors that run one recurrent layer in one direction.

Every kernel shares one data layout, the layout of ``PackedSequence.data`` ("packed rows"):

- ``x`` (N, I): the rows of step t are ``x[offset_t : offset_t + batch_sizes[t]]``, where
  ``offset_t = sum(batch_sizes[:t])`` and N = ``sum(batch_sizes)``;
- ``batch_sizes``: T non-increasing positive ints, so the sequences still running at step t are
  always the prefix ``0 .. batch_sizes[t] - 1`` of the batch (sequences sorted longest first);
- a padded (T, B, I) tensor is the special case ``batch_sizes = (B,) * T``, ``x = input.reshape(T*B, I)``.

Padded steps therefore never exist in a kernel: they cannot leak into states or gradients, and
the reverse direction starts every sequence at its own last step. Kernels never import
lstmkit modules (``lstmkit.nn``, ``lstmkit.functional``); those import kernels.

- ``contract``: the weights, options and masks every LSTM kernel takes;
- ``rows``: index arithmetic on packed rows;
- ``lstm_function``: the LSTM autograd Function, whose two recurrences a backend supplies;
- ``rnn_function``: the plain RNN's autograd Function, the same way;
- ``second_order``: what their backward returns when asked to build a graph (create_graph=True):
  gradients that autograd differentiates again, through the references ``functional`` registers;
- ``matmul``: the whole-sequence products, on oneDNN where torch has it and MKL is slower;
- ``mkl``: torch's MKL, where it is the faster BLAS (Intel processors), and its packed gemm;
- ``pool``: the parts of a kernel call, run at once on torch's own OpenMP threads;
- ``masks``: the variant options' random masks, a counter hash seeded from torch's generator;
- ``torch_ops``: backend "torch" (the recurrences as PyTorch calls; the plain RNN);
- ``cpu``: backend "cpu" (the LSTM's recurrences compiled with Numba); ``cpu_step``, its
  one-step kernels (a cell); ``cpu_rnn``, the plain RNN's on the same machinery;
- ``gpu``: backend "triton" (the recurrences as Triton kernels, for CUDA tensors), whose kernels
  are in ``triton_kernels``.
"""
