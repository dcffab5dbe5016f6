"""The recipe: its typed YAML, the stage runner and `aloe run`."""
