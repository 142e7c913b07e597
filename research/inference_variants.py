"""Inference-time variants of one or more dense policies (actions averaged) on training-distribution
scenes no training run collects from: the model card's first look before `vla-eval gain` existed
(results/tried_2026-12-01.json, `inference_time_first_look`).

    .venv/bin/python research/inference_variants.py VARIANT MODEL[,MODEL] EPISODES FIRST_SEED
    VARIANT: base | gain:G | tta:PIXELS (mean over the frame and four shifts) | ema:ALPHA
"""

import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np


def make(variant, models):
    from vla_pruned_ros.models.registry import load_policy

    pols = [load_policy(m, "manip") for m in models]
    for p in pols:  # variants act on the raw head, as measured (before any stored gain)
        p.set_action_gain(1.0)
    hi = np.array(pols[0].info.action_high, dtype=np.float32)
    kind, _, arg = variant.partition(":")
    state = {"prev": None}

    def predict(image, instr):
        if kind == "tta":
            s = int(arg)
            imgs = [image] + [
                np.roll(image, (dy, dx), axis=(0, 1))
                for dy, dx in [(s, 0), (-s, 0), (0, s), (0, -s)]
            ]
            a = np.mean([p.predict(im, instr) for p in pols for im in imgs], axis=0)
        else:
            a = np.mean([p.predict(image, instr) for p in pols], axis=0)
        if kind == "gain":
            a = np.clip(a * float(arg), -hi, hi)
        if kind == "ema":
            if state["prev"] is not None:
                a = float(arg) * a + (1 - float(arg)) * state["prev"]
            state["prev"] = a
        return a

    return predict, state


def episode(job):
    import torch

    torch.set_num_threads(1)
    variant, models, seed = job
    from vla_pruned_ros.sim import make_task

    g = globals()
    key = (variant, tuple(models))
    if g.get("_key") != key:
        g["_pred"], g["_state"] = make(variant, models)
        g["_task"] = g.get("_task") or make_task("manip")
        g["_key"] = key
    task, pred, st = g["_task"], g["_pred"], g["_state"]
    st["prev"] = None
    obs = task.reset(seed, phrasing="train")
    while True:
        r = task.step(pred(obs.image, obs.instruction))
        obs = r.observation
        if r.done:
            break
    m = task.metrics()
    return {"seed": seed, "success": bool(m["success"]), "unsafe": bool(m.get("unsafe", False))}


if __name__ == "__main__":
    variant, models, n, first = (
        sys.argv[1],
        sys.argv[2].split(","),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    Path("runs/inference_variants").mkdir(parents=True, exist_ok=True)
    t = time.time()
    jobs = [(variant, models, first + i) for i in range(n)]
    with mp.get_context("spawn").Pool(2) as pool:
        recs = list(pool.imap(episode, jobs, chunksize=4))
    s = np.mean([r["success"] for r in recs])
    u = np.mean([r["unsafe"] for r in recs])
    print(
        f"{variant:10s} {sys.argv[2]:30s} n={n} success {s:.3f} unsafe {u:.3f} "
        f"({time.time() - t:.0f}s)",
        flush=True,
    )
    json.dump(
        recs,
        open(
            f"runs/inference_variants/{variant.replace(':', '_')}_{len(models)}_{first}.json", "w"
        ),
    )
