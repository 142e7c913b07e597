"""vla_pruned_ros: deploy a pruned, GLUESTICK-recovered VLA policy on a ROS 2 robot.

Layers, bottom up (each imports only those below it):
  compression/  torch only: pruning, GLUESTICK factors, artifacts, memory reports
  models/       model adapters (embedded VLA, user checkpoints)
  sim/          MuJoCo tasks (no ROS)
  ros/          rclpy nodes and their pure helpers
  cli/          console entry points
"""

__version__ = "0.1.0"
