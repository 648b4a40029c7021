"""The guest agent as the one file shipped into a sandbox: a zipapp of the `dsv4.sandbox.guest` package.

Every agent-driven backend puts this file in the sandbox's read-only guest directory (bubblewrap and runsc bind
it, the VM shares it over 9p) and runs `python agent.pyz`. Inside, the package is the top-level `guest` (its
modules import each other relatively), run by the sandbox's own interpreter with the standard library only.
"""

import functools
import io
import zipfile
from pathlib import Path

NAME = "agent.pyz"
PACKAGE = Path(__file__).resolve().parent / "guest"
MAIN = "from guest.loop import main\n\nmain()\n"
"""The zipapp's entry point: Python puts the archive first on sys.path and runs this."""


@functools.cache
def bundle() -> bytes:
    """The zipapp's bytes, built once per host process. Members are stored uncompressed (zipimport needs zlib
    only to inflate) with a fixed date, so equal sources give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        add(z, "__main__.py", MAIN.encode())
        for path in sorted(PACKAGE.glob("*.py")):
            add(z, f"guest/{path.name}", path.read_bytes())
    return buf.getvalue()


def add(z: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    z.writestr(info, data)


def install(directory: Path) -> Path:
    """Write the zipapp into `directory` (a sandbox's guest directory); returns its path there."""
    path = directory / NAME
    path.write_bytes(bundle())
    return path
