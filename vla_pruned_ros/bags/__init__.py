"""rosbag2 files without rosbag2: record from and play into a live graph, read offline.

Bags are written and read with `rosbags` in the format Jazzy/Kilted `ros2 bag` uses (metadata
version 9, MCAP by default, sqlite3 on request). Messages stay serialized (CDR) end to end.
"""
