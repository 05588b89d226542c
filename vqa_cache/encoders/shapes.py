"""Which tensor of a Hugging Face model directory does not fit its config.json: what a load that fails with
`ignore_mismatched_sizes` (a RuntimeError whose details transformers logs elsewhere) is told as, in one line."""

from __future__ import annotations


def mismatch(model_dir) -> str:
    """'NAME: [5, 7] in the checkpoint, [32, 32] by config.json' for the first tensor whose shape the config
    contradicts, or '' when none is found: the model loaded again (only on this error path) with
    ignore_mismatched_sizes=True, which lists the mismatched keys (under transformers 5's renamed keys)."""
    try:
        from transformers import AutoModel
        from transformers.utils import logging

        verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
        logging.set_verbosity_error()  # (its load report: what is found here)
        logging.disable_progress_bar()
        try:
            _, info = AutoModel.from_pretrained(
                str(model_dir),
                trust_remote_code=False,
                use_safetensors=True,
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
        finally:
            logging.set_verbosity(verbosity)
            if bars:
                logging.enable_progress_bar()
        found = list(info.get("mismatched_keys") or [])
    except Exception:  # the description is a courtesy: without it the message is still one line
        return ""
    if not found:
        return ""
    first = found[0]
    if isinstance(first, (tuple, list)) and len(first) == 3:
        key, have, want = first
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return f"{key} is {list(have)} in the checkpoint but {list(want)} by config.json{more}"
    return f"tensors whose shapes config.json contradicts: {', '.join(map(str, found[:3]))}"


def load_failure(e: Exception, model_dir) -> str:
    """One line on why from_pretrained failed: the mismatched tensor where there is one."""
    detail = mismatch(model_dir) if isinstance(e, RuntimeError) else ""
    return detail or f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
