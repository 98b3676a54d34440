"""Everything drawn for a human: captioned photos, attention maps, loss curves, sample grids.

Matplotlib (Agg, no display) and Pillow only; nothing here imports TensorFlow.
"""
