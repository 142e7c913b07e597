"""Running a node until SIGINT or SIGTERM, and then letting it save its state.

rclpy's own signal handlers shut the context down underneath a spinning executor, which can
surface as an RCLError instead of a clean exit. The nodes here install plain Python handlers
instead and stop spinning on their own terms, so shutdown work (writing reports) always runs.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def run_node(
    make_node: Callable[[], Node],
    argv: list[str] | None = None,
    on_shutdown: Callable[[Node], None] | None = None,
    executor_factory: Callable[[], Executor] = SingleThreadedExecutor,
    stop_when: Callable[[Node], bool] | None = None,
) -> int:
    """Create the node, spin it until a signal, call `on_shutdown`, and return an exit code.

    A ValueError from the node's constructor (bad parameters) is one line on stderr, code 2.
    `stop_when(node)`, checked between spins, ends the run early (e.g. a recording's duration).
    """
    rclpy.init(
        args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO
    )
    stop = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        node = make_node()
        executor = executor_factory()
        executor.add_node(node)
        while not stop and rclpy.ok() and not (stop_when and stop_when(node)):
            executor.spin_once(timeout_sec=0.1)
        return 0
    except ValueError as err:
        print(f"{sys.argv[0]}: {err}", file=sys.stderr)
        return 2
    finally:
        if node is not None:
            if on_shutdown is not None:
                on_shutdown(node)
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
