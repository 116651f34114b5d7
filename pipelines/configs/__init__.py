"""One module per model family: its config dataclass, profiles and registration.

Modules here must stay light (no TensorFlow, Keras or MLflow imports): DAG files
read them at parse time to build their trigger forms.
"""
