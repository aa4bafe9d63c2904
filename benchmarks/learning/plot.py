"""Curves and tables of benchmarks/learning/README.md from the driver's JSONL records.

    python benchmarks/learning/plot.py benchmarks/learning/results/*.jsonl --out benchmarks/learning/results
    python benchmarks/learning/plot.py benchmarks/learning/results/round9*.jsonl benchmarks/learning/results/round1[0-5]*.jsonl --out ... --prefix rounds9-15_

Writes ``training_loss.png`` (loss against steps, log scale), ``validation_dice.png`` (validation 3D Dice
against steps), ``test_metrics.md`` (test-fold means per method; methods of one fold compared on the
cases every one of them scored, so a partly evaluated setting is never compared on other cases) and
``validation_concordance.md`` (how often each validation number orders two runs of one fold as their test
Dice does).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]


def curves(records: list[dict], kind: str, key: str) -> dict[str, tuple[list[int], list[float]]]:
    out: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    for r in records:
        if r["type"] == kind and key in r:
            out[r["arm"]][0].append(r["step"])
            out[r["arm"]][1].append(r[key])
    return dict(out)


def plot(series: dict[str, tuple[list[int], list[float]]], ylabel: str, path: Path, log: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(11, 5))
    colours = plt.get_cmap("tab20").colors
    for i, (arm, (steps, values)) in enumerate(sorted(series.items())):
        # UNet arms dashed: the diffusion arms are what the curves compare, the UNet is the bar to reach
        ax.plot(steps, values, marker="o", markersize=3, label=arm, color=colours[i % len(colours)],
                linestyle="--" if "unet" in arm else "-")
    ax.set_xlabel("training step (batch 32)")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the curves stay visible
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def test_table(records: list[dict]) -> str:
    by_fold: dict[int, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["type"] == "test":
            method = r["setting"] if r["arm"].startswith("rules") else f"{r['arm']} {r['setting']}"
            by_fold[r["fold"]][method][r["case_id"]] = r
    lines = []
    for fold, methods in sorted(by_fold.items()):
        # a run stopped part-way through its test cases (a device-time deadline) is left out when it
        # scored under 3/4 of the fold; the others are compared on the cases they all scored
        most = max(len(cases) for cases in methods.values())
        methods = {m: cases for m, cases in methods.items() if len(cases) >= 0.75 * most}
        common = sorted(set.intersection(*(set(cases) for cases in methods.values())))
        lines += [f"\n**Fold {fold}** (test fold; {len(common)} cases scored by every method shown: {', '.join(common)})\n",
                  "| method | 3D Dice | lesion F1 | AVD mL | abs. lesion count diff | HD95 mm |", "|---|---|---|---|---|---|"]
        for method, cases in sorted(methods.items(), key=lambda kv: -np.mean([kv[1][c]["dice"] for c in common])):
            rows = [cases[c] for c in common]
            mean = {k: np.nanmean([float(r[k]) for r in rows]) for k in
                    ("dice", "lesion_f1", "abs_volume_diff_ml", "abs_lesion_count_diff", "hd95_mm")}
            lines.append(f"| {method} | {mean['dice']:.3f} | {mean['lesion_f1']:.3f} | {mean['abs_volume_diff_ml']:.1f} "
                         f"| {mean['abs_lesion_count_diff']:.1f} | {mean['hd95_mm']:.1f} |")
    return "\n".join(lines) + "\n"


CHAIN = "trailing1x5"  # the isles24 evaluation's chain; its sweep is in the test_time record of that setting


def validation_concordance(records: list[dict]) -> str:
    """For the diffusion runs scored with :data:`CHAIN`: per pair of runs on one fold, does a validation number
    order them as their test 3D Dice (threshold swept, components < 1 mL removed) does?

    The numbers: the trainer's last validation Dice (``val``), the evaluation chain's validation Dice at 0.5
    and at its best threshold (both from the sweep the scoring ran on the validation fold).
    """
    runs: dict[str, dict] = defaultdict(dict)
    test: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r["type"] == "val":
            runs[r["arm"]]["trainer validation (last)"] = r["val_dice_3d"]
        elif r["type"] == "test_time" and r["setting"] == "{'respacing': 'trailing1', 'members': 5}" and r["sweep"]:
            sweep = {row["threshold"]: row["mean_dice_3d"] for row in r["sweep"]}
            runs[r["arm"]].update({"fold": r["fold"], f"{CHAIN} validation at 0.5": sweep[0.5],
                                   f"{CHAIN} validation, best threshold": max(sweep.values())})
        elif r["type"] == "test" and r["setting"] == f"{CHAIN}@val+min1ml":
            test[r["arm"]].append(r["dice"])
    scored = {arm: {**v, "test": float(np.mean(test[arm]))} for arm, v in runs.items()
              if arm in test and "fold" in v and "trainer validation (last)" in v}
    pairs = [(a, b) for i, a in enumerate(sorted(scored)) for b in sorted(scored)[i + 1:]
             if scored[a]["fold"] == scored[b]["fold"]]
    keys = ["trainer validation (last)", f"{CHAIN} validation at 0.5", f"{CHAIN} validation, best threshold"]
    lines = [f"{len(scored)} runs scored with {CHAIN}, {len(pairs)} pairs on the same fold\n",
             "| validation number | pairs ordered as their test 3D Dice |", "|---|---|"]
    for key in keys:
        agree = sum((scored[a][key] - scored[b][key]) * (scored[a]["test"] - scored[b]["test"]) > 0 for a, b in pairs)
        lines.append(f"| {key} | {agree} of {len(pairs)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jsonl", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prefix", default="", help="put before each output file name (plots of a subset of rounds)")
    args = parser.parse_args()
    records = read(args.jsonl)
    args.out.mkdir(parents=True, exist_ok=True)
    out = {name: args.out / f"{args.prefix}{name}" for name in ("training_loss.png", "validation_dice.png", "test_metrics.md",
                                                                 "validation_concordance.md")}
    plot(curves(records, "train", "train_loss"), "training loss (window mean)", out["training_loss.png"], log=True)
    plot(curves(records, "val", "val_dice_3d"), "validation 3D Dice (8 val-fold cases)", out["validation_dice.png"])
    out["test_metrics.md"].write_text(test_table(records))
    out["validation_concordance.md"].write_text(validation_concordance(records))
    print(out["test_metrics.md"].read_text() + "\n" + out["validation_concordance.md"].read_text())


if __name__ == "__main__":
    main()
