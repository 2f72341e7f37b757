"""Run every command example of README.md and docs/*.md; fail if one exits non-zero.

    python tools/check_docs.py                 # every page
    python tools/check_docs.py docs/cli.md     # some pages
    python tools/check_docs.py --list          # the blocks and whether they run

The convention (docs/README.md says it to writers):

* a fenced block opened with ```` ```sh ```` is run, as it stands, by `bash -e -o
  pipefail`; a page's blocks run in order, in one fresh temporary directory of
  their own, so a later block may use the files an earlier one made;
* ```` ```sh no-check ```` marks a block that cannot run here (it needs a
  detector, a beamline's files, a systemd, hours, or it installs the project):
  shown, never run. Say in the text around it why;
* other languages (```` ```toml ````, ```` ```text ````) are never run.

In the temporary directory `configs/` and `tools/` are links to this checkout's,
`peakstream` runs this checkout's code (`python -m stream.cli`, whatever is
installed) and `python` is the interpreter running this script. Processes a block
leaves in the background are killed when it ends.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\S*)\s*(.*)$")
TIMEOUT = 1800.0  # s for one block: only a hung command gets there


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    info: str  # the words after the language
    text: str

    @property
    def runs(self) -> bool:
        return "no-check" not in self.info.split()

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def sh_blocks(page: Path) -> list[Block]:
    """The ```sh blocks of a page, in order."""
    blocks, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")),
                   len(lines))
        if m.group(1) == "sh":
            blocks.append(Block(page, i + 1, m.group(2), "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return blocks


def sandbox(tmp: Path) -> dict[str, str]:
    """Links to configs/ and tools/, and a PATH whose peakstream and python are ours."""
    for name in ("configs", "tools"):
        (tmp / name).symlink_to(ROOT / name)
    bin_dir = tmp / ".bin"
    bin_dir.mkdir()
    shims = {"peakstream": f'exec "{sys.executable}" -m stream.cli "$@"\n',
             "python": f'exec "{sys.executable}" "$@"\n'}
    for name, body in shims.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> tuple[bool, str, float]:
    """Run one block in its own process group; (ok, output, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", block.text], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired:
        out, ok = f"(no end after {TIMEOUT:.0f} s)", False
    finally:
        try:  # what the block left in the background
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return ok, out, time.perf_counter() - t0


def check(selected: list[Path], verbose: bool = False) -> int:
    """Run the blocks of `selected` pages; the number of failed blocks."""
    failed = 0
    for page in selected:
        blocks = [b for b in sh_blocks(page) if b.runs]
        if not blocks:
            continue
        with tempfile.TemporaryDirectory(prefix="peakstream-docs-") as tmp:
            env = sandbox(Path(tmp))
            for block in blocks:
                ok, out, seconds = run_block(block, Path(tmp), env)
                print(f"{'ok  ' if ok else 'FAIL'} {block.where():<24s} {seconds:6.1f} s",
                      flush=True)
                if not ok or verbose:
                    print("    $ " + block.text.rstrip().replace("\n", "\n    $ "))
                    print("    " + out.rstrip()[-4000:].replace("\n", "\n    "), flush=True)
                if not ok:
                    failed += 1
                    break  # the page's later blocks may need this one's files
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", type=Path, help="pages to check (default: all)")
    ap.add_argument("--list", action="store_true", help="list the sh blocks, run nothing")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every block's output")
    args = ap.parse_args(argv)
    selected = [p.resolve() for p in args.pages] or pages()
    if args.list:
        for page in selected:
            for b in sh_blocks(page):
                print(f"{'run ' if b.runs else 'skip'} {b.where()}")
        return 0
    failed = check(selected, args.verbose)
    print(f"{failed} block(s) failed" if failed else "every command example ran")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
