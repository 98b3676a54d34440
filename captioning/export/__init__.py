"""Exporting a bundle to LiteRT, so captioning needs no TensorFlow (``captioning.inference.exported``).

``graphs`` holds the functions exported (the encoder, and each decoder's initial state and step,
traced from the very graphs the TensorFlow path runs); ``litert`` freezes and converts them and
checks each converted file against TensorFlow; ``writer`` writes a bundle's export folder;
``first_use`` makes it for a bundle saved without one. Every module here imports TensorFlow but
``first_use``, which imports it only when an export has to be made.
"""
