"""embedrl: reasoning-driven universal multimodal embeddings (Embed-RL) as a Kubeflow/MLflow workflow."""

__version__ = "0.1.0"
