"""Start the ADU classifier node on a camera topic.

    ros2 launch adu_perception classifier.launch.py bundle:=/path/to/bundle \
        camera_topic:=/camera/image_raw backend:=auto

Parameters come from share/adu_perception/config/classifier.yaml; the launch arguments
override bundle, backend and compressed. The node's `image` (and `image/compressed`) inputs
are remapped to camera_topic (and camera_topic/compressed, the image_transport convention).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    bundle = LaunchConfiguration("bundle")
    camera_topic = LaunchConfiguration("camera_topic")
    backend = LaunchConfiguration("backend")
    compressed = LaunchConfiguration("compressed")
    config = PathJoinSubstitution([FindPackageShare("adu_perception"), "config", "classifier.yaml"])

    return LaunchDescription([
        DeclareLaunchArgument(
            "bundle", description="bundle folder (model.onnx + manifest.json) written by `adu export`"),
        DeclareLaunchArgument(
            "camera_topic", default_value="/camera/image_raw",
            description="sensor_msgs/Image topic to classify (with compressed:=true, its "
                        "/compressed sibling is used)"),
        DeclareLaunchArgument(
            "backend", default_value="auto",
            description="auto | onnxruntime-cpu | onnxruntime-cuda | onnxruntime-tensorrt | tensorrt"),
        DeclareLaunchArgument(
            "compressed", default_value="false",
            description="subscribe to sensor_msgs/CompressedImage instead of sensor_msgs/Image"),
        Node(
            package="adu_perception",
            executable="classifier_node",
            name="classifier_node",
            output="screen",
            emulate_tty=True,
            parameters=[
                config,
                {
                    # Typed explicitly: a path such as "123" must stay a string.
                    "bundle": ParameterValue(bundle, value_type=str),
                    "backend": ParameterValue(backend, value_type=str),
                    "compressed": ParameterValue(compressed, value_type=bool),
                },
            ],
            remappings=[
                ("image", camera_topic),
                ("image/compressed", [camera_topic, "/compressed"]),
            ],
        ),
    ])
