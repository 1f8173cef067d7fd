"""Files of the repository that pages show but that live outside ``docs/``: the study's loss
plots under ``benchmarks/results/`` (RESULTS.md, included in the study page, links them by
their repository path). They are added to the site at the same path, so those links resolve in
the strict build and in the built site alike."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
#: repository folders whose images the site serves at the same path
IMAGE_DIRS = ("benchmarks/results",)


def on_files(files, config, **kwargs):
    """MkDocs hook: add every PNG under :data:`IMAGE_DIRS` to the site's files."""
    for folder in IMAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.png")):
            files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files
