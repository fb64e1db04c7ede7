"""Faster ways to run the same generator.

Folded and fused layers, Winograd, the precision choice, CUDA graphs, the GPU model, ONNX.
"""
