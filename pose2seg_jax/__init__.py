"""Pose2Seg in JAX/Flax: human instance segmentation from an image and pose keypoints."""

__version__ = "0.1.0"

__all__ = ["Predictor"]


def __getattr__(name: str):
    # Lazy: importing the package stays light (no jax or flax until a Predictor is asked for).
    if name == "Predictor":
        from pose2seg_jax.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'pose2seg_jax' has no attribute {name!r}")
