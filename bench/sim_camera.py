"""Benchmark: what the simulator's supersampled camera costs per step.

Why: `Task(supersample=N)` renders N times larger and area-averages down so that edges show
inside a pixel; that is only worth having if data collection and evaluation stay cheap. This
times, for each task and N, a whole control step driven by the expert (physics, expert,
render) and the render alone, and the downsample by OpenCV's area resize against a numpy mean
over the N x N cells (the same numbers; `Task.render` uses OpenCV).

    python bench/sim_camera.py                                   # prints the table
    python bench/sim_camera.py --out bench/RESULTS_sim_camera.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import cv2
import numpy as np

from vla_pruned_ros.sim import make_task


def _ms(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) * 1e3 / repeats


def measure(task_name: str, supersample: int, steps: int) -> dict[str, float]:
    extra = {"expert": "smooth"} if task_name == "manip" else {}
    with make_task(task_name, supersample=supersample, **extra) as task:
        seed = 1_000_000
        task.reset(seed)

        def step() -> None:
            nonlocal seed
            if task.step(task.expert_action()).done:
                seed += 1
                task.reset(seed)

        row = {"step_ms": _ms(step, steps), "render_ms": _ms(task.render, steps)}
        task.renderer.update_scene(task.data, camera=task.camera)
        full = task.renderer.render()
        s, k = task.image_size, supersample
        row["cv2_area_ms"] = _ms(
            lambda: cv2.resize(full, (s, s), interpolation=cv2.INTER_AREA), 200
        )
        row["numpy_mean_ms"] = _ms(
            lambda: full.reshape(s, k, s, k, 3).mean(axis=(1, 3), dtype=np.float32), 200
        )
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--supersample", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = [
        "| task | supersample | render size | step (ms) | render (ms) | "
        "OpenCV area (ms) | numpy cell mean (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task_name in ("manip", "nav"):
        for k in args.supersample:
            r = measure(task_name, k, args.steps)
            lines.append(
                f"| {task_name} | {k} | {64 * k} | {r['step_ms']:.2f} | {r['render_ms']:.2f} | "
                f"{r['cv2_area_ms']:.3f} | {r['numpy_mean_ms']:.3f} |"
            )
            print(lines[-1], flush=True)
    if args.out:
        head = (
            f"# Simulator camera cost ({dt.date.today()}, `python bench/sim_camera.py "
            f"--out {args.out}`, one process, 64x64 output)\n\n"
            "Step = physics + the expert's label + render, driven by the expert over held-out "
            "scenes. The downsample columns time a render of the full size.\n\n"
        )
        args.out.write_text(head + "\n".join(lines) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
