"""Pallas kernels for mxjax: fused block quantization and weight-only matmul.

Each kernel has a pure-jnp reference, a Mosaic GPU kernel, a portable Pallas twin that runs in
interpret mode on the CPU, a TPU kernel where written, and one entry point taking
`implementation=` and `interpret=`. See docs/kernels.md.
"""
