"""Start one ADU classifier node for one camera.

    ros2 launch adu_perception classifier.launch.py bundle:=/path/to/bundle \
        namespace:=front camera_topic:=/front/image_raw \
        use_detections:=true detections_topic:=/front/detections

Parameters come from share/adu_perception/config/classifier.yaml, then from params_file
if given (e.g. the camera's thresholds from `adu calibrate`); the launch arguments
override bundle, backend, compressed, use_detections and qos. The node's `image` (and
`image/compressed`) inputs are remapped to camera_topic (and camera_topic/compressed, the
image_transport convention), its `detections` input to detections_topic. Its outputs live
under <namespace>/classifier_node/. One launch per camera: include this file once per
camera with its own namespace (README: two cameras).
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ("bundle", None, "bundle folder (model.onnx + manifest.json) written by `adu export`"),
    ("namespace", "", "namespace of the node, e.g. the camera's name (outputs: "
                      "<namespace>/classifier_node/...)"),
    ("camera_topic", "/camera/image_raw", "sensor_msgs/Image topic to classify (with "
                                          "compressed:=true, its /compressed sibling is used)"),
    ("use_detections", "false", "classify the boxes of a detector (vision_msgs/Detection2DArray "
                                "on detections_topic, paired by header stamp)"),
    ("detections_topic", "/detections", "the detector's Detection2DArray topic"),
    ("backend", "auto", "auto | onnxruntime-cpu | onnxruntime-cuda | onnxruntime-tensorrt | tensorrt"),
    ("compressed", "false", "subscribe to sensor_msgs/CompressedImage instead of sensor_msgs/Image"),
    ("qos", "reliable", "input QoS: reliable, or sensor_data for a best-effort camera"),
    ("params_file", "", "a further parameter file applied after the package's config, e.g. this "
                        "camera's thresholds written by `adu calibrate` (empty: none)"),
)


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, description=description) if default is None else
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_classifier_node)])


def _classifier_node(context):
    """The node, once the arguments are known (params_file is added only when given)."""
    arg = {name: LaunchConfiguration(name) for name, _, _ in ARGUMENTS}
    config = PathJoinSubstitution([FindPackageShare("adu_perception"), "config", "classifier.yaml"])
    camera_file = arg["params_file"].perform(context)
    if camera_file and not os.path.isfile(camera_file):
        # launch_ros would only warn and start the node without the camera's thresholds
        raise RuntimeError(f"params_file {camera_file!r} is not a file")
    return [
        Node(
            package="adu_perception",
            executable="classifier_node",
            name="classifier_node",
            namespace=arg["namespace"],
            output="screen",
            emulate_tty=True,
            parameters=[
                config,
                *([camera_file] if camera_file else []),
                {
                    # Typed explicitly: a path such as "123" must stay a string.
                    "bundle": ParameterValue(arg["bundle"], value_type=str),
                    "backend": ParameterValue(arg["backend"], value_type=str),
                    "compressed": ParameterValue(arg["compressed"], value_type=bool),
                    "use_detections": ParameterValue(arg["use_detections"], value_type=bool),
                    "qos": ParameterValue(arg["qos"], value_type=str),
                },
            ],
            remappings=[
                ("image", arg["camera_topic"]),
                ("image/compressed", [arg["camera_topic"], "/compressed"]),
                ("detections", arg["detections_topic"]),
            ],
        ),
    ]
