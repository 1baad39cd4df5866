"""raysearch: Ray-distributed hyperparameter search for masked skeleton autoencoders."""

__version__ = "0.1.0"
