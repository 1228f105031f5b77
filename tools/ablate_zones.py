"""Ablation of the joint multi-zone stage: the thalamic gradient broadcaster on and off.

    python tools/ablate_zones.py [--epochs 3] [--seeds 0,1] [--zones hippocampus,amygdala,...]
        [--json checkpoints/ablate_zones.json]

Trains the same :class:`~aura.models.zone_brain.ZoneBrain` (default config, embedded digits)
with ``aura.experiments.zones.joint.train_joint`` once per seed with the broadcaster on and once
with it off,
and reports held-out accuracy, ``specialisation`` (mean over zones of the zone head's accuracy on
the digits routed to it minus on the others), ``class_zone_nmi`` (how much the routing depends on
the class) and each zone's share. Prints a table; ``--json`` writes every run's summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura.experiments.zones.joint import JointConfig, train_joint  # noqa: E402
from aura.experiments.zones.joint_step import JointLossConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--zones", default="hippocampus,amygdala,hypothalamus,language")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    zones = tuple(z.strip() for z in args.zones.split(","))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for broadcast in (True, False):
            with tempfile.TemporaryDirectory() as root:
                cfg = JointConfig(
                    ckpt_root=root, zones=zones, epochs=args.epochs, seed=seed,
                    loss=JointLossConfig(broadcast=broadcast), tensorboard=False,
                )  # fmt: skip
                r = train_joint(cfg, log=lambda s: None)
            row = {
                "seed": seed,
                "broadcast": broadcast,
                "test_accuracy": r["test_accuracy"],
                "specialisation": r["specialisation"],
                "class_zone_nmi": r["class_zone_nmi"],
                "shares": {z: round(v["share"], 3) for z, v in r["per_zone"].items()},
                "wall_s": r["wall_s"],
                "summary": r,
            }
            rows.append(row)
            print(
                f"seed {seed} broadcast {'on ' if broadcast else 'off'}: acc "
                f"{row['test_accuracy']:.3f} specialisation {row['specialisation']:.3f} "
                f"nmi {row['class_zone_nmi']:.3f} shares {row['shares']} ({row['wall_s']:.0f}s)",
                flush=True,
            )
    print("\nmedian over seeds     accuracy  specialisation  class_zone_nmi")
    for broadcast in (True, False):
        sel = [r for r in rows if r["broadcast"] == broadcast]
        med = {k: statistics.median(r[k] for r in sel) for k in
               ("test_accuracy", "specialisation", "class_zone_nmi")}  # fmt: skip
        print(
            f"broadcaster {'on ' if broadcast else 'off'}       {med['test_accuracy']:.3f}     "
            f"{med['specialisation']:.3f}           {med['class_zone_nmi']:.3f}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"epochs": args.epochs, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
