"""The four networks of SPEC 3 that S2I trains, each built in loops from one table of (channels,
kernel, stride): the audio autoencoder, the dense generator, the discriminator (the informativity
classifier is shared: `s2i_model.nets`)."""

from s2i_model.models.s2i.autoencoder import AudioAutoencoder, Decoder, Encoder
from s2i_model.models.s2i.discriminator import Discriminator
from s2i_model.models.s2i.generator import DenseGenerator

__all__ = ["AudioAutoencoder", "Decoder", "DenseGenerator", "Discriminator", "Encoder"]
