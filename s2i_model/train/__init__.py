"""Training: the two trainers (autoencoder, translator), the data held on the device, DDP, AMP and RNG plumbing."""
