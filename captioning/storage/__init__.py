"""Files the tool reads and writes safely: atomic writes, bounded readers, output folders, disk space.

Nothing here imports TensorFlow (``model_files`` takes a built Keras model), so every cheap check
of the CLI can use it.
"""
