"""What the training and red-team stages share about safety: harmful-prompt sets, verdicts and
the refusal detector, and safe answers. Below both, so neither imports the other."""
