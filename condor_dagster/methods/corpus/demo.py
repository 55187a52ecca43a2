"""A small demo corpus: pages of The Debian Administrator's Handbook (Debian package
debian-handbook, which `make setup` / scripts/install-system-deps.sh installs)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

HANDBOOK_DIR = Path("/usr/share/doc/debian-handbook/html")

# Pages of real prose that extract to 2,000-3,500 characters each (measured with the reader:
# 3,301, 2,103 and 2,688 characters), so the demo runs fast but the methods get whole sections.
DEFAULT_PAGES: Mapping[str, Sequence[str]] = {
    "en-US": ("sect.why-debian.html", "sect.role-of-distributions.html"),
    "zh-CN": ("sect.foundation-documents.html",),
}


def install_demo_corpus(
    dest: Path,
    *,
    pages: Mapping[str, Sequence[str]] = DEFAULT_PAGES,
    handbook: Path = HANDBOOK_DIR,
) -> list[Path]:
    """Copy the named handbook pages ({locale: [page, ...]}) to dest/<locale>/<page>; returns
    the copied paths. The locale folder gives each document its language."""
    if not handbook.is_dir():
        raise FileNotFoundError(
            f"the Debian Administrator's Handbook is not at {handbook}; install it with "
            "`sudo apt-get install debian-handbook` (or `make setup`)"
        )
    copied: list[Path] = []
    for locale, names in pages.items():
        for name in names:
            page = handbook / locale / name
            if not page.is_file():
                raise FileNotFoundError(
                    f"handbook page {page} does not exist; pick a page listed in "
                    f"{handbook / locale}"
                )
            target = dest / locale / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(page, target)
            copied.append(target)
    return copied
