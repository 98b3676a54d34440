"""Tags: what the encoder's own ImageNet classifier sees, as caption words.

``table`` reads the reviewed class -> word table, ``tagger`` turns the classifier's probabilities
into the confident tags a bundle's vocabulary can say, and ``wordnet_table`` regenerates the table
from WordNet and the reviewed ``word_rules`` at development time; ``support`` says, without
TensorFlow, whether a bundle tags. ``inference.guided`` makes captions name the tags they miss
(constrained beam search). Nothing here imports TensorFlow.
"""
