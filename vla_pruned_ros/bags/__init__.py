"""rosbag2 files without rosbag2, in the format Jazzy/Kilted `ros2 bag` uses (metadata version
9, MCAP by default, sqlite3 on request).

- `reader.py`: the one reader (MCAP streamed with the `mcap` library, chunk CRCs checked, cut
  files salvaged to the last whole message; sqlite3 through rosbags; CDR decoded with the
  rosbags typestore, no rclpy), with a report of out-of-order stamps and gaps.
- `writer.py`: the one writer (MCAP with chunk CRCs through `mcap`, sqlite3 through rosbags).
- `schemas.py`: a topic recorded with an older definition of its type than the installed one
  is decoded with the bag's stored definition and re-encoded as the installed type (the reader
  applies it; bytes pass unchanged where the definitions agree).
- `types.py`: the typestore that knows our messages. `reader`, `writer`, `schemas` and `types`
  import nothing from `ros/` and no rclpy (test/test_layer_imports.py).
- `record.py`, `play.py`, `qos.py`: the ROS tools (rclpy) that record from and play into a live
  graph through the reader and writer above.
"""
