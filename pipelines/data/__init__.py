"""Dataset registry and tf.data pipelines.

``load_arrays(name)`` returns a whole dataset as named numpy arrays from its source
(tensorflow-datasets, a package that ships the data, or a generator);
:mod:`pipelines.data.prepared` splits it, stores it under the data dir with a
content fingerprint, and turns it into ``tf.data`` pipelines.
"""

from pipelines.data.registry import Dataset, Loaded, dataset_names, get_dataset, load_arrays, register_dataset

__all__ = ["Dataset", "Loaded", "dataset_names", "get_dataset", "load_arrays", "register_dataset"]
