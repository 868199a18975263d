"""AG-NEWS's text: the paper's alphabet and character encoding, and reading its CSV files."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .datasets import AG_NEWS
from .errors import DataError, DataMissing

SEQ_LEN = AG_NEWS.input_shape[0]  # characters per text, from the dataset table
# The paper's alphabet (its AG-NEWS data helper): codes 1..68; 0 pads, 69 is any other character.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:\u2019\"/|_#$%\u02c6&*\u02dc\u2018+=<>()[]{} \\"
UNKNOWN_CODE = 69

_CODE_OF = np.full(0x110000, UNKNOWN_CODE, dtype=np.int16)
for _i, _c in enumerate(ALPHABET):
    _CODE_OF[ord(_c)] = _i + 1


def encode_text(text: str, length: int = SEQ_LEN) -> np.ndarray:
    """Characters -> alphabet codes, truncated to `length` and zero-padded (the paper's char2vec)."""
    out = np.zeros(length, dtype=np.int16)
    cps = np.frombuffer(text[:length].encode("utf-32-le"), dtype=np.uint32)
    out[: len(cps)] = _CODE_OF[cps]
    return out


def read_text(path: Path) -> str:
    """A file's text in UTF-8 (a leading byte-order mark is dropped); another encoding is one error
    naming the line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise DataError(f"ag-news: {path}:{line}: byte 0x{raw[exc.start]:02x} at column {column} is not UTF-8; "
                        f"save the file as UTF-8") from None


def read_ag_news_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows "class","title","description" -> (codes [N, 1024] int16, labels [N] 0-based).

    As in the paper's code: every field after the class, lower-cased, each followed by a space.
    The csv module handles the quotes ("" inside fields) and commas; backslash sequences and
    entities such as #36; are kept as the characters they are.
    """
    codes, labels = [], []
    rows = csv.reader(io.StringIO(read_text(path), newline=""))
    for row in rows:
        if not row:
            continue
        try:
            label = int(row[0]) - 1
        except ValueError:
            raise DataError(f"ag-news: {path}:{rows.line_num}: class {row[0]!r} is not a number") from None
        text = "".join(field.lower() + " " for field in row[1:])
        codes.append(encode_text(text))
        labels.append(label)
    if not codes:
        raise DataError(f"ag-news: {path} holds no rows")
    return np.stack(codes), np.asarray(labels, dtype=np.int64)


def find_root(data_dir: Path) -> Path:
    """The folder holding classes.txt, train.csv and test.csv: the data folder or its ag_news_csv."""
    for root in (data_dir, data_dir / "ag_news_csv"):
        if all((root / f).is_file() for f in ("classes.txt", "train.csv", "test.csv")):
            return root
    raise DataMissing(
        f"ag-news: classes.txt, train.csv and test.csv not found in {data_dir} or {data_dir / 'ag_news_csv'}"
    )


def read_classes(root: Path) -> tuple[str, ...]:
    path = root / "classes.txt"
    classes = tuple(line.strip() for line in read_text(path).splitlines() if line.strip())
    if not classes:
        raise DataError(f"ag-news: {path} is empty; it names the classes, one a line (class 1 first)")
    return classes


def read_splits(root: Path, classes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """train_x, train_y, test_x, test_y: the CSVs encoded, their labels checked against the classes."""
    blob = {}
    for split in ("train", "test"):
        path = root / f"{split}.csv"
        x, y = read_ag_news_csv(path)
        if y.min() < 0 or y.max() >= len(classes):
            raise DataError(f"ag-news: {path} has classes outside 1..{len(classes)} (the classes of "
                            f"{root / 'classes.txt'})")
        blob[f"{split}_x"], blob[f"{split}_y"] = x, y
    return blob
