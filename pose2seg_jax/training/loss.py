"""The training loss: 2-class softmax cross-entropy over every pixel of every real person."""

import jax
import jax.numpy as jnp
import optax


def segmentation_loss_sum(
    logits: jax.Array, targets: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Summed cross-entropy and the number of pixels it covers (REFERENCE.md section 8).

    The mean over the batch is ``sum / count``; keeping both lets data-parallel training divide
    by the global count so that any split of the batch over devices gives the same gradient.

    Args:
      logits: (B, P, A, A, 2) background/person logits.
      targets: (B, P, A, A) integer 0/1 targets (255 is ignored, as the reference).
      valid: (B, P) bool, False for padding.

    Returns:
      (loss_sum, pixel_count), float32 scalars.
    """
    keep = valid[:, :, None, None] & (targets != 255)
    labels = jnp.where(keep, targets, 0).astype(jnp.int32)
    per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return jnp.sum(jnp.where(keep, per_pixel, 0.0)), jnp.sum(keep).astype(jnp.float32)
