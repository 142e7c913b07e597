"""`launch_ros` actions for a bringup graph (`vla_pruned_ros/bringup.py`), for the launch files.

Only a full ROS 2 install has `launch` and `launch_ros` (neither is on PyPI), so this module is
imported by the launch files alone; what it starts is decided by `bringup.launch_nodes`, which
the tests check against `vla-ros up`. Here each description becomes an action:

- a lifecycle executable (the policy node) becomes a `LifecycleNode`: the launch file emits
  `configure`, and on each transition's result either goes on (`inactive` -> emit `activate`;
  `active` -> log that the policy is active) or, when a transition fails (`configuring` ->
  `unconfigured`, `activating` -> `inactive`), logs which and shuts the launch down, so a policy
  that failed to load never leaves a gate waiting on a node that will never act. The node's own
  `autostart` is switched off by `bringup.launch_nodes`, so only the launch file drives it;
- any other node becomes a `Node`; the one that `ends_graph` shuts the launch down on its exit,
  as `vla-ros up` ends the graph.
"""

from __future__ import annotations

from launch.actions import EmitEvent, LogInfo, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from vla_pruned_ros.bringup import LaunchNode


def _change(node: LifecycleNode, transition: int) -> EmitEvent:
    return EmitEvent(
        event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition)
    )


def _on(node: LifecycleNode, start: str, goal: str, entities: list) -> RegisterEventHandler:
    return RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node, start_state=start, goal_state=goal, entities=entities
        )
    )


def lifecycle_startup(node: LifecycleNode, name: str) -> list:
    """configure -> activate with each result checked; a failed transition ends the launch."""

    def failed(step: str) -> list:
        text = f"{name}: {step} failed; stopping the launch (see the node's log above)"
        return [LogInfo(msg=text), Shutdown(reason=text)]

    return [
        _on(node, "configuring", "inactive", [_change(node, Transition.TRANSITION_ACTIVATE)]),
        _on(node, "activating", "active", [LogInfo(msg=f"{name}: active")]),
        _on(node, "configuring", "unconfigured", failed("configure")),
        _on(node, "activating", "inactive", failed("activate")),
        _change(node, Transition.TRANSITION_CONFIGURE),
    ]


def node_actions(nodes: list[LaunchNode]) -> list:
    """The actions that start a graph's nodes, in the bringup file's order."""
    actions: list = []
    for desc in nodes:
        common = {
            "package": desc.package,
            "executable": desc.executable,
            "name": desc.name,
            "output": "screen",
            "parameters": list(desc.parameters),
        }
        if desc.lifecycle:
            node = LifecycleNode(namespace="", **common)
            actions += [node, *lifecycle_startup(node, desc.name)]
        else:
            node = Node(**common)
            actions.append(node)
        if desc.ends_graph:
            reason = f"{desc.name} ended the graph"
            actions.append(
                RegisterEventHandler(
                    OnProcessExit(target_action=node, on_exit=[Shutdown(reason=reason)])
                )
            )
    return actions
