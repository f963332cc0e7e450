"""Torch-free inference runtime shared by the ROS 2 node and `adu replay`."""
