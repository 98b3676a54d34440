"""Where captioned photos come from: datasets and their layouts, Mini-COCO's download, caption text
(normalisation, the vocabulary and its token ids) and the one image loader the model sees.

TensorFlow-free: ``info`` and the menu read datasets without it.
"""
