"""Settings that make a whole retraining run fast and its gate predictable in tests.

A small CNN at 64 px learns the high-contrast generated strips (``learnable_dataset``) in ~1 min on 2
cores. Thresholds aim at full validation recall (``t_pass`` below every validation defect) while the gate
asks for 0.3 test recall, so a passing gate does not hinge on how well a 3-epoch model generalises;
the gate's own rules are unit-tested in ``tests/code/test_gate.py``.
"""

from typing import Any

TINY: dict[str, Any] = {
    "model.backbone": "small_cnn",
    "model.weights": "none",
    "model.input_size": 64,
    "train.epochs_frozen": 3,
    "train.epochs_finetune": 0,
    "train.batch_size": 32,
    "train.learning_rate": 0.002,  # pinned: the demo profile's rate is tuned for 12 epochs, not 3
    "thresholds.recall_target": 1.0,
    "thresholds.confidence": None,
    "gate.recall_target": 0.3,
    "gate.min_patch_specificity": 0.0,
    "validation.min_images": 5,
}
