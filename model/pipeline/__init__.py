"""The inpainting pipeline.

Options and plan, the NumPy executor (``host``), the tensor executor (``device``) and the
high-resolution refinement.
"""
