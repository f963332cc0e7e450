"""ros_node stage of adu_perception."""
