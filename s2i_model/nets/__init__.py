"""The four networks of SPEC 3, each built in loops from one table of (channels, kernel, stride)."""

from .autoencoder import AudioAutoencoder, Decoder, Encoder
from .discriminator import Discriminator
from .generator import DenseGenerator
from .informativity import InformativityClassifier

__all__ = ["AudioAutoencoder", "Decoder", "DenseGenerator", "Discriminator", "Encoder",
           "InformativityClassifier"]
