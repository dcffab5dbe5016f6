"""Model merging: linear, SLERP, task arithmetic, TIES, DARE-TIES, DARE-linear over safetensors."""
