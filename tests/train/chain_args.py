"""Shared arguments of the tiny training runs (a module, not conftest: test modules import it)."""

SIZE = 64  # model input side for the tiny runs


def train_args(data, split, out, *extra: str) -> list[str]:
    return ["train", "classify", "--data", str(data), "--split-csv", str(split), "--out", str(out),
            "--epochs", "1", "--batch-size", "8", "--image-size", str(SIZE), "--workers", "0",
            "--weights", "none", "--no-progress", *extra]
