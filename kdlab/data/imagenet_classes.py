"""ImageNet class subsets used in the KD literature, by WordNet id (wnid)."""

from __future__ import annotations

from pathlib import Path

# Imagenette (fast.ai, Howard 2019): 10 easily told apart classes. Sorted, like ImageFolder.
IMAGENETTE = [
    "n01440764",  # tench
    "n02102040",  # English springer
    "n02979186",  # cassette player
    "n03000684",  # chain saw
    "n03028079",  # church
    "n03394916",  # French horn
    "n03417042",  # garbage truck
    "n03425413",  # gas pump
    "n03445777",  # golf ball
    "n03888257",  # parachute
]

# ImageNet-100 of "Contrastive Multiview Coding" (Tian, Krishnan & Isola, 2019), imagenet100.txt of
# the CMC code release (listed here in the release's order), later used by KD work on ImageNet
# subsets. Presets number their classes in sorted order, as ImageFolder does on a folder of them.
IMAGENET100 = """
n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245 n01773797
n01735189 n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148 n03530642 n04435653
n02086910 n02859443 n13040303 n03594734 n02085620 n02099849 n01558993 n04493381 n02109047 n04111531
n02877765 n04429376 n02009229 n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855
n03785016 n03764736 n03775546 n02087046 n07836838 n04099969 n04592741 n03891251 n02701002 n03379051
n02259212 n07715103 n03947888 n04026417 n02326432 n03637318 n01980166 n02113799 n02086240 n03903868
n02483362 n04127249 n02089973 n03017168 n02093428 n02804414 n02396427 n04418357 n02172182 n01729322
n02113978 n03787032 n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029
n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630 n03584829 n02123045
n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672 n02090622
""".split()  # noqa: SIM905 (a block of ids reads better than 100 lines)

PRESETS: dict[str, list[str]] = {"imagenette": IMAGENETTE, "imagenet100": IMAGENET100}


def resolve_classes(classes: list[str] | str | None, train_dir: Path) -> list[str]:
    """The class folder names, in label order, from a list, a preset, a file, or ``train_dir``.

    Args:
        classes: A list of folder names; a preset name (``imagenette``, ``imagenet100``); a path
            to a text file with one name per line (``#`` starts a comment); or None for every
            folder of ``train_dir``, sorted.
        train_dir: The training split's folder, listed when ``classes`` is None.
    """
    if classes is None:
        names = sorted(entry.name for entry in train_dir.iterdir() if entry.is_dir())
        if not names:
            raise ValueError(f"{train_dir} has no class folders; expected {train_dir}/<class>/<image files>")
    elif isinstance(classes, str):
        names = _named_list(classes)
    else:
        names = [str(name) for name in classes]
    if not names:
        raise ValueError("classes is empty: list at least one class folder, or leave it unset for all")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"classes lists these folders more than once: {', '.join(repeated)}")
    return names


def _named_list(name: str) -> list[str]:
    if name in PRESETS:
        return sorted(PRESETS[name])
    path = Path(name).expanduser()
    if not path.is_file():
        raise ValueError(
            f"classes='{name}' is neither a preset ({', '.join(PRESETS)}) nor an existing file with one "
            "class folder name per line"
        )
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]
