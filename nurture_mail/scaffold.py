"""`nurture init`: copy the embedded working-directory skeleton into place."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SKELETON = "skeleton"


def skeleton_files() -> list[tuple[str, bytes]]:
    """(relative path, content) of every file in the embedded skeleton."""
    root = resources.files("nurture_mail") / SKELETON
    out: list[tuple[str, bytes]] = []

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name.startswith(".") or child.name == "__pycache__":
                continue
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            else:
                out.append((rel, child.read_bytes()))

    walk(root, "")
    return out


def create_workspace(directory: Path, *, force: bool = False) -> tuple[list[Path], list[Path]]:
    """Write the skeleton into directory; existing files are kept unless force."""
    written: list[Path] = []
    kept: list[Path] = []
    for rel, content in skeleton_files():
        target = directory / rel
        if target.exists() and not force:
            kept.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(target)
    (directory / "outbox").mkdir(parents=True, exist_ok=True)
    return written, kept
