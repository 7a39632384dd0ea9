"""The `pixel-unet` backbone: a small conditional UNet trained from scratch on the
scene (Stage I) and grown on the subject (Stage II), exported as one denoiser graph.
"""

NAME = "pixel-unet"
