"""Image captioning: CNN image features + an LSTM decoder, trained and used from one CLI."""

__version__ = "0.1.0"
