"""The serving layer: FastAPI app over the batch view (published ALS model) and the speed view.

No Spark here: the model is read from the lake with pyarrow and scored with numpy.
"""
