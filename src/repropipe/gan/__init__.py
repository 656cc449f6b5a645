"""WGAN-GP on CelebA 64x64 with I-SIR latent sampling, measured by FID and KID (torch-fidelity)."""
