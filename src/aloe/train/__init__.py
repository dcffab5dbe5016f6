"""Training: SFT, preference pairs and DPO alignment on TRL."""
