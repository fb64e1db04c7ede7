"""The paper's network: Fast Fourier Convolutions and the FFC ResNet generator."""
