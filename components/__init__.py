"""Thin Kubeflow Pipelines components, one module per stage. Each imports `embedrl` inside its function
(the function's source travels in the compiled YAML; the library comes from the project image) and
calls one function of `embedrl.pipeline.steps`.

`IMAGE` is the project image every step runs in (docker/Dockerfile); override it at compile time with
the EMBEDRL_IMAGE environment variable (`embedrl pipeline compile --image ...` sets it).
"""

import os

DEFAULT_IMAGE = "ghcr.io/embedrl/embedrl:0.1.0"
IMAGE = os.environ.get("EMBEDRL_IMAGE", DEFAULT_IMAGE)
