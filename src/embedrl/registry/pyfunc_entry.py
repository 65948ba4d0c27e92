"""The models-from-code entry of the Embedder pyfunc: MLflow stores this file with the model and runs
it on load, so the model holds no pickled objects, only this import of the installed `embedrl`."""

from mlflow.models import set_model

from embedrl.registry.pyfunc import EmbedderModel

set_model(EmbedderModel())
