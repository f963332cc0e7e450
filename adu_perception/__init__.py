"""adu_perception: Approximate Domain Unlearning for CLIP, from training to a ROS 2 node."""

__version__ = "0.1.0"
