"""Novel-defect guard: does it hold a defect class the classifier never saw, and at what cost on clean images?

DATA is a Severstal-layout folder, or an image+mask folder imported first with
``steelqc import-masks DATA --out WORK/imported --size 256x256``. Every image of class K is removed from a
copy of the dataset (class K leaves its metadata too); ``steelqc pipeline COPY --auto-approve`` (the production
flow: validation, patches, training, thresholds, novelty bank and calibration, evaluation, registration, gate)
trains on the rest in a throwaway state folder. The registered version then inspects, image by image:

- every class-K image (none was seen in training or validation): recall of the classifier alone (decision not
  PASS from the scores and thresholds only) and of classifier + guard (the model's own decision);
- the test split of the copy: recall on the known classes, and on its clean images the HOLD rate the guard
  adds (clean images PASSed by the classifier but HELD for novelty), beside precision and specificity.

``--profile fast`` (default) trains a frozen ImageNet Lite0 at 160 px for a few epochs, because full Lite0
trainings take 20-30 min on 2 shared cores; ``--profile real`` uses the ``real`` profile unchanged.

    .venv/bin/python -P bench/novelty.py DATA --hold-out-class K [--work DIR] [--profile fast|real|demo]
        [--max-clean N] [--set k=v ...]
    .venv/bin/python -P bench/novelty.py --search-timing   # the bank's k-NN search alone, vs all BLAS threads
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROFILES: dict[str, tuple[str, list[str]]] = {
    "fast": (
        "real",
        [
            "model.input_size=160",
            "train.epochs_frozen=4",
            "train.epochs_finetune=0",
            "train.augment=false",
            "train.patience=2",
        ],
    ),
    "real": ("real", []),
    "demo": ("demo", []),
}
REGISTERED = re.compile(r"registered: (\S+) v(\d+) \(MLflow run (\w+)\)")


def _steelqc() -> str:
    return str(Path(sys.executable).parent / "steelqc")


def _run(command: list[str], env: dict[str, str], log: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=out, text=True, check=False)
    log.with_suffix(".stdout").write_text(done.stdout)
    return done.returncode, done.stdout, time.monotonic() - started


def _dataset(data: Path, work: Path) -> Path:
    if (data / "train.csv").is_file():
        return data
    imported = work / "imported"
    if not (imported / "train.csv").is_file():
        command = [_steelqc(), "import-masks", str(data), "--out", str(imported), "--size", "256x256"]
        code, out, _ = _run(command, dict(os.environ), work / "import.log")
        if code:
            sys.exit(f"import-masks failed (exit {code}); see {work / 'import.log'}\n{out}")
    return imported


def _without_class(source: Path, held_out: int, out: Path, max_clean: int | None, seed: int) -> list[str]:
    """A copy of ``source`` (images hard-linked: the dataset refuses symlinks leaving its root) without the
    images of class ``held_out``; their ids."""
    import numpy as np
    import yaml

    from steelqc.data.dataset import Dataset

    dataset = Dataset.open(str(source))
    if held_out not in dataset.meta.classes:
        sys.exit(f"class {held_out} is not in {source} (classes: {dataset.meta.classes})")
    labels = dataset.labels
    held = sorted(set(labels.loc[labels["ClassId"].astype(int) == held_out, "ImageId"]))
    defective = set(labels["ImageId"])
    clean = [i for i in dataset.image_ids if i not in defective]
    if max_clean is not None and len(clean) > max_clean:
        clean = sorted(np.random.default_rng(seed).choice(clean, max_clean, replace=False).tolist())
    keep = sorted((defective - set(held)) | set(clean))
    (out / "train_images").mkdir(parents=True, exist_ok=True)
    for image_id in keep:
        link = out / "train_images" / image_id
        if not link.exists():
            os.link(source / "train_images" / image_id, link)
    kept = labels[labels["ImageId"].isin(keep)]
    kept[["ImageId", "ClassId", "EncodedPixels"]].to_csv(out / "train.csv", index=False)
    meta = yaml.safe_load((source / "dataset.yaml").read_text())
    meta["classes"] = {k: v for k, v in meta["classes"].items() if int(k) != held_out}
    (out / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return held


def _rates(decisions: list[str], truth: list[bool]) -> dict[str, float]:
    import numpy as np

    flagged, positive = np.array([d != "PASS" for d in decisions]), np.array(truth)
    tp, fp = int(np.sum(flagged & positive)), int(np.sum(flagged & ~positive))
    return {
        "recall": tp / positive.sum() if positive.any() else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "specificity": float(np.mean(~flagged[~positive])) if (~positive).any() else float("nan"),
    }


def _evaluate(state: Path, name: str, version: str, source: Path, held: list[str], copy: Path) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from steelqc.config import load_settings
    from steelqc.data.dataset import Dataset
    from steelqc.pyfunc import load_inspector
    from steelqc.thresholds import decide, image_decision
    from steelqc.tracking import configure_tracking

    settings = load_settings(
        overrides={"state_dir": str(state), "tracking.tracking_uri": f"sqlite:///{state}/mlflow.db"}
    )
    configure_tracking(settings)
    inspector, meta = load_inspector(f"models:/{name}/{version}")
    if inspector.novelty is None:
        sys.exit("the registered version carries no novelty bank (novelty.enabled was off?)")
    index = pd.read_parquet(next(state.glob("runs/*/patch_index.parquet")))
    test = index[index["split"] == "test"].groupby("image_id")["label"].max()
    images = {"held-out": held, "test": test.index.tolist()}
    full, reduced = Dataset.open(str(source)), Dataset.open(str(copy))
    out: dict[str, Any] = {"n_held_out": len(held), "n_test": len(test), "n_test_clean": int((test == 0).sum()),
                           "calibration": inspector.novelty.bank.summary()}  # fmt: skip
    for part, ids in images.items():
        started = time.perf_counter()
        loader = full if part == "held-out" else reduced
        results = inspector.inspect(loader.load_image(i) for i in ids)
        out[f"{part}_seconds"] = time.perf_counter() - started
        out[f"{part}_novelty"] = [float(np.max(r.patch_novelty)) for r in results if r.patch_novelty is not None]
        guarded = [r.decision for r in results]
        alone = [image_decision(decide(r.patch_scores, meta.thresholds)) for r in results]
        truth = [True] * len(ids) if part == "held-out" else [bool(test[i]) for i in ids]
        out[f"{part}_alone"], out[f"{part}_guarded"] = _rates(alone, truth), _rates(guarded, truth)
        out[f"{part}_novel_images"] = float(np.mean([bool(r.reason) for r in results]))  # the guard alone
        if part == "test":
            clean = ~np.array(truth)
            raised = np.array([a == "PASS" and g != "PASS" for a, g in zip(alone, guarded, strict=True)])
            out["extra_hold_clean"] = float(np.mean(raised[clean])) if clean.any() else float("nan")
            out["clean_novelty"] = [n for n, c in zip(out["test_novelty"], clean, strict=True) if c]
    from sklearn.metrics import roc_auc_score

    held_novelty, clean_novelty = out["held-out_novelty"], out["clean_novelty"]
    out["novelty_auc"] = roc_auc_score([1] * len(held_novelty) + [0] * len(clean_novelty), held_novelty + clean_novelty)
    return out


def search_timing(rounds: int = 5) -> None:
    """ms per 64 queries against a 1000 x 1280 bank (Lite0's pooled features): NoveltyBank.scores (one BLAS
    thread, exact distances) vs scikit-learn's search on all threads, alternating rounds in this process."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    from steelqc.novelty import NoveltyBank

    rng = np.random.default_rng(0)
    rows, queries = rng.normal(size=(1000, 1280)).astype(np.float32), rng.normal(size=(64, 1280)).astype(np.float32)
    bank, baseline = NoveltyBank(rows, layer="pool"), NearestNeighbors(n_neighbors=1, algorithm="brute").fit(rows)
    times: dict[str, list[float]] = {"bank": [], "all threads": []}
    for _ in range(rounds):
        for name, search in (
            ("bank", lambda: bank.scores(queries)),
            ("all threads", lambda: baseline.kneighbors(queries)),
        ):
            started = time.perf_counter()
            search()
            times[name].append(1000 * (time.perf_counter() - started))
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(
        f"k-NN, 64 patches vs 1000 x 1280 bank: NoveltyBank.scores {median['bank']:.1f} ms, sklearn on all threads "
        f"{median['all threads']:.1f} ms ({median['all threads'] / median['bank']:.1f}x); load average "
        f"{os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    if "--search-timing" in sys.argv:
        search_timing()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="Severstal-layout folder, or image+mask folder to import")
    parser.add_argument("--hold-out-class", type=int, required=True, help="ClassId removed from train and val")
    parser.add_argument("--work", type=Path, help="Keep imports, state folders and logs here (default: temp dir)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    parser.add_argument("--max-clean", type=int, help="Keep at most this many clean images (seeded sample)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="Extra --set for the pipeline")
    parser.add_argument("--reuse", action="store_true", help="Evaluate the version already trained in --work")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="steelqc-novelty-") as tmp:
        work = (args.work or Path(tmp)).resolve() / f"hold-out-{args.hold_out_class}"
        work.mkdir(parents=True, exist_ok=True)
        source = _dataset(args.data.resolve(), work.parent)
        copy = work / "data"
        held = _without_class(source, args.hold_out_class, copy, args.max_clean, seed=0)
        config, profile_sets = PROFILES[args.profile]
        sets = [*profile_sets, "novelty.enabled=true", *args.sets]
        state = work / "state"
        env = {**os.environ, "STEELQC_STATE_DIR": str(state)}
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
            env.pop(key, None)  # a throwaway registry and ephemeral Prefect, never the user's servers
        command = [_steelqc(), "pipeline", str(copy), "--config", config, "--auto-approve",
                   *[token for s in sets for token in ("--set", s)]]  # fmt: skip
        load = os.getloadavg()
        if args.reuse and (work / "pipeline.stdout").is_file():
            code, stdout, seconds = 0, (work / "pipeline.stdout").read_text(), float("nan")
        else:
            code, stdout, seconds = _run(command, env, work / "pipeline.log")
        registered = REGISTERED.search(stdout)
        if not registered:
            sys.exit(f"the pipeline registered nothing (exit {code}); see {work / 'pipeline.log'}\n{stdout}")
        result = _evaluate(state, registered.group(1), registered.group(2), source, held, copy)
        load_after = os.getloadavg()

    cal = result["calibration"]
    print(
        f"\n{args.data} without class {args.hold_out_class} ({result['n_held_out']} held-out images; test split "
        f"{result['n_test']} images, {result['n_test_clean']} clean); profile {args.profile}, {' '.join(sets)}"
    )
    print(f"pipeline {seconds:.0f} s, load average {load[0]:.1f} before / {load_after[0]:.1f} after")
    print(
        f"bank {cal['bank_size']} of {cal['n_source_patches']} clean training patches ({cal['subsample']}, "
        f"layer {cal['layer']}, built in {cal['build_seconds']:.1f} s); threshold {cal['threshold']:.4f}: clean "
        f"val HOLD {cal['hold_rate']:.3f}, bound {cal['hold_rate_bound']:.3f} ({cal['note']})"
    )
    print(f"{'':<28}{'recall':>9}{'precision':>11}{'specificity':>13}")
    for part, title in (("held-out", f"held-out class {args.hold_out_class}"), ("test", "test split (known)")):
        for arm in ("alone", "guarded"):
            rates = result[f"{part}_{arm}"]
            print(
                f"{title + ', ' + ('classifier' if arm == 'alone' else '+ guard'):<28}{rates['recall']:>9.3f}"
                f"{rates['precision']:>11.3f}{rates['specificity']:>13.3f}"
            )
    print(f"novelty ROC-AUC, held-out class vs clean test images (image max): {result['novelty_auc']:.3f}")
    print(
        f"images with a novel patch: held-out class {result['held-out_novel_images']:.3f}, test split "
        f"{result['test_novel_images']:.3f}"
    )
    gain = result["held-out_guarded"]["recall"] - result["held-out_alone"]["recall"]
    print(
        f"held-out recall gain {100 * gain:+.1f} points; extra HOLD on clean test images "
        f"{100 * result['extra_hold_clean']:.1f}% (target: +20 points at <= 5%)"
    )


if __name__ == "__main__":
    main()
