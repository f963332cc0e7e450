"""Two cameras, one classifier node each: classifier.launch.py included once per camera, in
its own namespace and scope (the README's two-camera example).

    ros2 launch adu_perception two_cameras.launch.py bundle:=/path/to/bundle

Camera <name> publishes /<name>/image_raw and its detector /<name>/detections; the results
land on /<name>/classifier_node/detections, /<name>/classifier_node/suppressed, ...
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

CAMERAS = ("front", "rear")


def generate_launch_description():
    classifier = PathJoinSubstitution([FindPackageShare("adu_perception"), "launch",
                                       "classifier.launch.py"])
    cameras = [GroupAction([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(classifier),
        launch_arguments={"bundle": LaunchConfiguration("bundle"),
                          "backend": LaunchConfiguration("backend"),
                          "use_detections": LaunchConfiguration("use_detections"),
                          "namespace": camera,
                          "camera_topic": f"/{camera}/image_raw",
                          "detections_topic": f"/{camera}/detections"}.items())])
        for camera in CAMERAS]
    return LaunchDescription([
        DeclareLaunchArgument("bundle", description="bundle folder written by `adu export`"),
        DeclareLaunchArgument("backend", default_value="auto", description="inference backend"),
        DeclareLaunchArgument("use_detections", default_value="true",
                              description="classify each camera's detector boxes"),
        *cameras,
    ])
