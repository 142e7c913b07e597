"""The test side of a gated graph: a real rclpy node that records the gated commands (with their
receipt times), the monitor's status and its /diagnostics values, and sets the monitor's
parameters through its service."""

from __future__ import annotations

import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist, TwistStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from vla_pruned_ros_msgs.msg import SafetyStatus

from vla_pruned_ros.ros import topics


class Watcher:
    """Receives the gated commands and the monitor's status in the test process."""

    def __init__(self, stamped: bool = False) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("watcher", context=self.context)
        self.cmds: list[tuple[float, float]] = []  # (receipt time, linear.x)
        self.frames: list[str] = []  # header.frame_id of each TwistStamped
        self.status: list[SafetyStatus] = []
        self.diagnostics: list[dict[str, str]] = []  # the monitor's key/values, oldest first
        self.node.create_subscription(TwistStamped if stamped else Twist, topics.CMD, self._cmd, 50)
        self.node.create_subscription(SafetyStatus, topics.SAFETY_STATUS, self.status.append, 50)
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._diagnostics, 50)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def _cmd(self, msg: Twist | TwistStamped) -> None:
        if isinstance(msg, TwistStamped):
            self.frames.append(msg.header.frame_id)
            msg = msg.twist
        self.cmds.append((time.monotonic(), msg.linear.x))

    def _diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith("safety_monitor"):
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def set_parameters(self, **values) -> list:
        """Set parameters of the running monitor through its real `set_parameters` service
        (what `ros2 param set` calls); one SetParametersResult per parameter."""
        client = self.node.create_client(SetParameters, "/safety_monitor/set_parameters")
        assert client.wait_for_service(timeout_sec=20.0), "no /safety_monitor/set_parameters"
        request = SetParameters.Request(
            parameters=[
                Parameter(name.replace("__", "."), value=v).to_parameter_msg()
                for name, v in values.items()
            ]
        )
        future = client.call_async(request)
        assert self.spin_until(future.done, 20.0), "set_parameters did not answer"
        self.node.destroy_client(client)
        return list(future.result().results)

    def change_state(self, transition_id: int) -> bool:
        """One lifecycle transition of the monitor through its real `change_state` service
        (what `ros2 lifecycle set` calls); whether it succeeded."""
        client = self.node.create_client(ChangeState, "/safety_monitor/change_state")
        assert client.wait_for_service(timeout_sec=20.0), "no /safety_monitor/change_state"
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert self.spin_until(future.done, 20.0), "change_state did not answer"
        self.node.destroy_client(client)
        return future.result().success

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
