"""Launch configs shipped with aloe, read through `importlib.resources.files("aloe.configs")`:
accelerate/NAME.yaml for `aloe sft|align --accelerate-config NAME`."""
