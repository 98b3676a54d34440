"""Training a decoder: the pipeline from dataset to bundle, the fit loop and its checkpoints.

``pipeline.train_model`` is what the ``train`` command and the menu call; ``checkpoint_layout``
answers without TensorFlow whether an interrupted run can be resumed.
"""
