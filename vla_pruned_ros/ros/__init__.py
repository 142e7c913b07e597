"""ROS 2 layer: rclpy nodes and the helpers they share. Only this layer imports rclpy."""
