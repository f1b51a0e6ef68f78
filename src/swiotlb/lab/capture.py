"""``swiotlb capture``: hand out the script that records a SWIOTLB trace on a real machine.

The recording itself is done by ``capture.sh`` (shipped beside this module as package
data): a POSIX sh script that runs as root on the target machine, which need not have
Python or this package. See docs/capturing.md.
"""

from __future__ import annotations

import stat
from importlib import resources
from pathlib import Path

import click

SCRIPT_NAME = "capture.sh"

USAGE = """\
Capture a SWIOTLB trace on a real Linux machine (run as root there):

  swiotlb capture --write capture.sh          # or: swiotlb capture --print-script > capture.sh
  # copy capture.sh to the target machine, then on it:
  ./capture.sh -o out -n mybox -w fio4k='fio --name=r --filename=/dev/nvme0n1 --rw=randread \\
      --bs=4k --direct=1 --ioengine=libaio --iodepth=32 --number_ios=20000'
  # or a single workload:  ./capture.sh -o out -n mybox -- dd if=/dev/sda of=/dev/null bs=1M count=256 iflag=direct

It writes out/NAME.trace.txt.gz and out/NAME.meta.json. Back here:

  swiotlb trace stats out/mybox.trace.txt.gz
  swiotlb replay out/mybox.trace.txt.gz --meta out/mybox.meta.json
  swiotlb advise out/mybox.trace.txt.gz --meta out/mybox.meta.json

Boot the target with 'swiotlb=force memblock=debug log_buf_len=16M' to bounce every
mapping and to let the script find the pool's physical range. 'capture.sh -h' lists the
options; docs/capturing.md explains what is recorded and why.
"""


def script_text() -> str:
    """The capture script, read from the installed package."""
    return resources.files("swiotlb.lab").joinpath(SCRIPT_NAME).read_text(encoding="utf-8")


def write_script(path: Path, *, force: bool = False) -> Path:
    """Write the capture script to ``path`` (a directory gets ``capture.sh``), executable."""
    if path.is_dir():
        path = path / SCRIPT_NAME
    if path.exists() and not force:
        raise FileExistsError(path)
    path.write_text(script_text(), encoding="utf-8")
    mode = path.stat().st_mode
    path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@click.command("capture")
@click.option("--print-script", "print_script", is_flag=True,
              help="Print capture.sh to standard output (to copy it to the target machine).")
@click.option("--write", "write_path", type=click.Path(path_type=Path), default=None,
              help="Write capture.sh to this path (or into this directory) and make it executable.")
@click.option("--force", "-f", is_flag=True, help="With --write: overwrite an existing file.")
def capture_cmd(print_script: bool, write_path: Path | None, force: bool) -> None:
    """Record a SWIOTLB trace on a real machine: print or write the capture script.

    Without options, explains how to capture and what to do with the result.
    """
    if print_script and write_path is not None:
        raise click.UsageError("give either --print-script or --write, not both")
    if print_script:
        click.echo(script_text(), nl=False)
        return
    if write_path is not None:
        try:
            written = write_script(write_path, force=force)
        except FileExistsError as exc:
            raise click.ClickException(f"{exc.args[0]} exists (use --force to overwrite)") from exc
        click.echo(f"wrote {written} (run it as root on the machine to trace; '{written} -h' for options)")
        return
    click.echo(USAGE, nl=False)
