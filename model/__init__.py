"""LaMa generator, checkpoint loading and the inpainting pipeline."""
