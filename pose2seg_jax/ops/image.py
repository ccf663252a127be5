"""Image normalisation of the network input (REFERENCE.md section 2)."""

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize_images(images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """RGB uint8 images to the network's input: /255, minus ImageNet mean, over its std.

    Images travel to the device as uint8 (a quarter of the bytes of float32) and are
    normalised there. The black letterbox border becomes -mean/std, as in the reference.

    Args:
      images: (..., H, W, 3) uint8 RGB (or float in [0, 255]).
      dtype: output dtype.

    Returns:
      (..., H, W, 3) normalised images.
    """
    x = images.astype(jnp.float32) / 255.0
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).astype(dtype)
