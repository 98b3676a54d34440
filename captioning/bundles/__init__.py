"""Model bundles (``saved_models/NAME/``): the typed schema of config.json, saving and loading,
the user's default model, and combining bundles into an ensemble.

TensorFlow-free to import: reading configs, listing and describing bundles answer without it;
loading the weights imports it.
"""
