"""Captioning with a trained bundle: beam search, ensembles, the Captioner, attention weights."""
