"""Which of the two image-folder layouts a folder has, its class folders, and what is wrong if neither.

- splits: ``root/train/<class>/*`` plus ``root/val/<class>/*`` and/or ``root/test/<class>/*``;
- classes: ``root/<class>/*``, one folder per class, split into train and val by a seeded ratio.

Folders whose name starts with a dot (``.ipynb_checkpoints``, ``.cache``) are never classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kdlab.data.imagenet_files import EXTENSIONS, did_you_mean

EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class FolderLayout:
    """Where a folder's splits are.

    Args:
        kind: ``"splits"`` (``root/{train,val,test}/<class>``) or ``"classes"`` (``root/<class>``).
        train: The folder holding the training class folders (``root/train`` or ``root``).
        val: ``root/val`` if it exists (splits layout only).
        test: ``root/test`` if it exists (splits layout only).
    """

    kind: str
    train: Path
    val: Path | None = None
    test: Path | None = None


def expected(root: Path) -> str:
    """The two layouts, spelled out for ``root``."""
    return (
        f"expected {root}/<class>/<image> (one folder per class; val_fraction of each class is held out) "
        f"or {root}/train/<class>/<image> with {root}/val/<class>/<image> and/or "
        f"{root}/test/<class>/<image>, images with extension {', '.join(EXTENSIONS)} (any case)"
    )


def find_layout(root: Path) -> FolderLayout:
    """The layout of ``root``; a missing root or a folder with neither layout is a clear error."""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"image folder {root} {what}; {expected(root)}")
    folders = class_folders(root)
    if "train" in folders:
        val, test = (root / name if name in folders else None for name in EVAL_SPLITS)
        return FolderLayout("splits", root / "train", val, test)
    found = [name for name in EVAL_SPLITS if name in folders]
    if found:
        raise FileNotFoundError(
            f"{root} has {'/ and '.join(found)}/ but no train/ folder; add {root}/train/<class>/<image>, "
            f"or point root at a folder of class folders; {expected(root)}"
        )
    if not folders:
        images = any(e.name.lower().endswith(EXTENSIONS) for e in os.scandir(root) if e.is_file())
        hint = f"; if these are one class's images, set root to the folder above {root}" if images else ""
        raise FileNotFoundError(f"{root} holds no class folders ({contents(root)}){hint}; {expected(root)}")
    return FolderLayout("classes", root)


def folder_classes(layout: FolderLayout) -> list[str]:
    """The class names of ``layout``: its training class folders, sorted by name."""
    names = class_folders(layout.train)
    if not names:
        raise FileNotFoundError(
            f"{layout.train} holds no class folders ({contents(layout.train)}); "
            f"{expected(layout.train.parent)}"
        )
    return names


def class_folders(folder: Path) -> list[str]:
    """The sorted names of ``folder``'s sub-folders that can be classes (no hidden ones)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def check_class_folders(split: Path, names: list[str]) -> None:
    """Every class in ``names`` has a folder in ``split`` with at least one image, or a clear error."""
    present = set(class_folders(split))
    for name in names:
        folder = split / name
        if name not in present:
            raise FileNotFoundError(
                f"class folder {folder} is missing; {did_you_mean(name, sorted(present))}{split} holds "
                f"{_listing(sorted(present), 'folders')}"
            )
        if not any(e.name.lower().endswith(EXTENSIONS) for e in os.scandir(folder) if e.is_file()):
            nested = "train" in class_folders(folder)
            hint = f"; is root one level too high? {folder} looks like an image folder" if nested else ""
            raise ValueError(
                f"class folder {folder} holds no images directly (looked for {', '.join(EXTENSIONS)}, any "
                f"case); it holds {contents(folder)}{hint}"
            )


def contents(folder: Path) -> str:
    """What ``folder`` holds, briefly: its files and folders, the first few by name."""
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    files = [e.name for e in entries if e.is_file()]
    folders = [e.name + "/" for e in entries if e.is_dir()]
    if not files and not folders:
        return "nothing"
    parts = [_listing(files, "files")] if files else []
    return ", ".join([*parts, _listing(folders, "folders")] if folders else parts)


def _listing(names: list[str], noun: str) -> str:
    if not names:
        return f"no {noun}"
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{len(names)} {noun if len(names) > 1 else noun[:-1]} ({shown})"
