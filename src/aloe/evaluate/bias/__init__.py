"""Counterfactual bias probes over MCQ vignettes."""
