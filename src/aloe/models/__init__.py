"""Model specs, the embedded default, and the backends that load and run models."""
