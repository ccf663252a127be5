"""Pose2Seg in JAX/Flax: human instance segmentation from an image and pose keypoints."""

__version__ = "0.1.0"
