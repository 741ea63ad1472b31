"""The four networks of SPEC 3 and the comparison models' (SPEC 6), each built in loops from one table of (channels, kernel, stride)."""

from .aivae import Aivae, Aivaegan, ImageDiscriminator
from .autoencoder import AudioAutoencoder, Decoder, Encoder
from .discriminator import Discriminator
from .generator import DenseGenerator
from .informativity import InformativityClassifier
from .mmgan import MmGan

__all__ = ["Aivae", "Aivaegan", "AudioAutoencoder", "Decoder", "DenseGenerator", "Discriminator", "Encoder",
           "ImageDiscriminator", "InformativityClassifier", "MmGan"]
