"""The steelqc pyfunc's input and output format: what callers and ``mlflow models serve`` send, what comes back.

Inputs are polymorphic on purpose (encoded bytes, base64 text from JSON serving, pixel arrays); the output is
one row per image with its decision, worst patch and every patch's score. Batch inspection writes the same rows.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, Schema

from steelqc.data.errors import DataError, ImageDecodeError

if TYPE_CHECKING:
    from steelqc.inference import ImageResult

OUTPUT_SIGNATURE = Schema(
    [
        ColSpec("string", "decision"),
        ColSpec("double", "worst_score"),
        ColSpec("long", "worst_patch_y"),
        ColSpec("long", "worst_patch_x"),
        ColSpec("string", "patch_scores"),
    ]
)


def images_from_model_input(model_input: Any) -> list[np.ndarray]:
    """Images from what a pyfunc caller or ``mlflow models serve`` passes in.

    Accepts a DataFrame (or dict) with an ``image`` column of encoded bytes, base64 text of them (JSON
    serving) or pixel arrays; a list of those; or an array of images ``(H,W)``, ``(N,H,W)``, ``(N,H,W,C)``.
    """
    if isinstance(model_input, pd.DataFrame) or isinstance(model_input, dict):
        if "image" not in model_input:
            raise ImageDecodeError("model input needs a column named 'image'", file="model input")
        column = model_input["image"]
        # a dict may carry one image as a scalar; iterating it would yield its bytes or characters
        items = [column] if isinstance(column, (str, bytes, bytearray)) else list(column)
    elif isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim == 2:
            items = [model_input]
        elif model_input.ndim in (3, 4):
            items = list(model_input)
        else:
            raise ImageDecodeError(f"image array of shape {model_input.shape} (expected 2-4 dims)", file="model input")
    else:
        items = list(model_input)
    from steelqc.inference import decode_inputs

    return decode_inputs([_item_bytes_or_array(item, i) for i, item in enumerate(items)])


def _item_bytes_or_array(item: Any, i: int) -> bytes | np.ndarray:
    if isinstance(item, str):
        try:
            return base64.b64decode("".join(item.split()), validate=True)  # MLflow wraps base64 at 76 chars
        except binascii.Error:
            raise ImageDecodeError("text input is not base64-encoded image bytes", file=f"input[{i}]") from None
    if isinstance(item, (list, tuple)):
        try:
            return np.asarray(item)
        except ValueError:  # ragged nested lists
            raise ImageDecodeError("nested lists are not a rectangular pixel array", file=f"input[{i}]") from None
    return item


RESULT_COLUMNS = tuple(spec.name for spec in OUTPUT_SIGNATURE.inputs)
# Output columns of a model that carries a novelty guard (steelqc.novelty), after RESULT_COLUMNS.
NOVELTY_SIGNATURE = [ColSpec("double", "max_novelty"), ColSpec("string", "reason")]
NOVELTY_COLUMNS = tuple(spec.name for spec in NOVELTY_SIGNATURE)


def result_record(result: ImageResult) -> dict[str, Any]:
    """One image's output row (:data:`RESULT_COLUMNS`, + :data:`NOVELTY_COLUMNS` and per-patch novelty when the
    model carries a novelty guard); plain dict so per-image callers build no DataFrame."""
    if result.patch_novelty is not None:
        return _with_novelty(_classifier_record(result), result)
    return _classifier_record(result)


def _with_novelty(record: dict[str, Any], result: ImageResult) -> dict[str, Any]:
    assert result.patch_novelty is not None and result.novel is not None
    patches = json.loads(record["patch_scores"])
    for patch, novelty, novel in zip(patches, result.patch_novelty, result.novel, strict=True):
        patch.update(novelty=round(float(novelty), 6), novel=bool(novel))
    return {**record, "patch_scores": json.dumps(patches), "max_novelty": float(np.max(result.patch_novelty)),
            "reason": result.reason}  # fmt: skip


def _classifier_record(result: ImageResult) -> dict[str, Any]:
    return {
        "decision": result.decision,
        "worst_score": result.worst_score,
        "worst_patch_y": result.worst_patch[0],
        "worst_patch_x": result.worst_patch[1],
        "patch_scores": json.dumps(
            [
                {"y": y, "x": x, "score": round(float(s), 6), "decision": str(d)}
                for (y, x), s, d in zip(result.positions, result.patch_scores, result.patch_decisions, strict=True)
            ]
        ),
    }


def results_frame(results: Sequence[ImageResult]) -> pd.DataFrame:
    """One row per image: decision, worst score and patch, and every patch's score as JSON."""
    guarded = any(r.patch_novelty is not None for r in results)
    columns = [*RESULT_COLUMNS, *NOVELTY_COLUMNS] if guarded else list(RESULT_COLUMNS)
    return pd.DataFrame([result_record(r) for r in results], columns=columns)


@contextmanager
def serving_errors() -> Iterator[None]:
    """Errors as ``mlflow models serve`` should answer them: the reason in one line, no traceback.

    MLflow's scoring server sends an :class:`MlflowException`'s message to the client (a bad input's code,
    INVALID_PARAMETER_VALUE, makes it a 400); any other error becomes a generic message plus the server's whole
    traceback, install paths included. So bad input is re-raised with steelqc's reason, and anything else
    (a bug) is logged here with its traceback and answered with its type only.
    """
    try:
        yield
    except DataError as exc:
        raise MlflowException.invalid_parameter_value(str(exc)) from exc
    except MlflowException:
        raise
    except Exception as exc:
        logging.getLogger(__name__).exception("steelqc could not score a model input")
        raise MlflowException(
            f"steelqc could not score this input ({type(exc).__name__}); the traceback is in the server's log"
        ) from exc
