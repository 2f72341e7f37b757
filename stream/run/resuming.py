"""The runner's side of crash-resume: which file a start (or a stray point after a
restart) continues. The file's own side is `stream.store.resume` and
`stream.store.checkpoint`.

A start whose scan has a file a crash left open (status running or fail), written
with the same config, continues that file from its last checkpoint instead of a
new one (`[output] resume`, default true); so does the first point of a scan that
is not open, when this process was restarted in the middle of it (its start then
comes from the file). `replay --resume FILE` names the file itself.

A start that gets a new file while an earlier file of the same scan id is there
(a scan resent after it ended `incomplete`: the pattern names it again, a second
file) is warned about, naming the earlier file and `replay --fill`, which
completes that file instead (`warn_earlier`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from stream.core.messages import Start, start_to_json
from stream.run.openscan import SCAN_ID
from stream.run.resumeparams import restore_params
from stream.store.identity import processing_hash
from stream.store.naming import safe_name
from stream.store.outputdir import output_files
from stream.store.resume import (
    FILLABLE,
    Candidate,
    Resumed,
    ResumeError,
    newest_resumable,
    resume,
    survey,
)

log = logging.getLogger(__name__)

MAX_LOOKUPS = 16  # scan ids of stray points looked up in the output directory, per process


class ResumeFinder:
    """Finds and reopens the file a scan continues, for one runner's config and output
    place (`output_file`: one named file, never resumed unless named as `resume_file`)."""

    def __init__(self, config: Any, output_dir: Path, output_file: Path | None,
                 runner: Any = None):
        self.config = config
        # a ScanRunner: its params are set again to what a resumed file was using; a scan
        # whose file cannot be resumed is refused there (last_error, its points dropped)
        self.runner = runner
        self.output_dir = output_dir
        self.output_file = output_file
        self.resume_file: Path | None = None  # replay --resume: continue this file
        self._no_resume: set[str] = set()  # scan ids that have no file to resume
        self.not_resumed: set[Path] = set()  # files another acquisition reached: left alone
        # the candidate files of the scan whose start (or stray point) is being looked
        # at, each read once for all that is decided of it (`survey`)
        self._surveyed: tuple[str, list[Candidate]] | None = None

    def for_start(self, start: Start) -> Resumed | None:
        """The crashed file this start continues (replay --resume's, or one the pattern's
        directory holds for this scan and config), reopened; None: a new file.
        ResumeError when `resume_file` cannot be continued."""
        interval = self.config["output"]["flush_interval"]
        self._surveyed = None  # a start: the files as they are now
        if self.resume_file is not None:
            return self._with_params(resume(self.resume_file, self.config.text(),
                                            start_to_json(start), flush_interval=interval,
                                            calibration=self.config.calibration()))
        found = self._resumable(start.scan_id)
        if found is None:
            return None
        try:
            return self._with_params(resume(found, self.config.text(), start_to_json(start),
                                            flush_interval=interval,
                                            calibration=self.config.calibration()))
        except ResumeError as exc:
            log.warning("scan %s: %s is not resumed (%s); a new file is written",
                        start.scan_id, found, exc)
            return None

    def for_point(self, scan_id: str) -> Resumed | None:
        """A point of a scan not open: after a restart, the scan this process was writing
        when it died. Its file reopened (the start comes from the file), or None."""
        if (scan_id in self._no_resume or not SCAN_ID.fullmatch(scan_id)
                or len(self._no_resume) >= MAX_LOOKUPS):
            return None  # stray points of many scans: a few directory lookups at most
        self._surveyed = None
        found = self._resumable(scan_id)
        if found is None:
            self._no_resume.add(scan_id)
            other = self._crashed_with_another_config(scan_id)
            if other is not None:
                self._refuse(scan_id, other, "it was written with another processing config "
                                             "([[node]], [linker], [source] detector / "
                                             "trajectory)")
            return None
        try:
            return self._with_params(resume(
                found, self.config.text(), flush_interval=self.config["output"]["flush_interval"],
                calibration=self.config.calibration()))
        except ResumeError as exc:
            self._no_resume.add(scan_id)
            self._refuse(scan_id, found, str(exc))
            return None

    def warn_earlier(self, scan_id: str, path: Path) -> None:
        """A new file `path` is about to be written for this scan: warn of each earlier
        file of the same scan id the output directory holds (a resend of a scan that
        ended incomplete makes a second file; `replay --fill` completes the first)."""
        if self.output_file is not None:
            return  # one named file (replay --output): the caller chose it
        earlier_files, self._surveyed = self._survey(scan_id), None
        for c in earlier_files:
            earlier, status, lost = c.path, c.status, c.lost
            if earlier == path:
                continue
            ended = ("was left open (status running)" if status == "running"
                     else f"ended {status}" + (f" ({', '.join(lost)} points)" if lost else ""))
            hint = (f"; to complete the earlier file instead, from the scan's recording: "
                    f"`peakstream replay RECORDING --fill {earlier}`" if status in FILLABLE
                    else "")
            log.warning("scan %s: an earlier file of this scan, %s, %s; this start writes "
                        "a second file, %s%s", scan_id, earlier, ended, path, hint)

    def _refuse(self, scan_id: str, path: Path, why: str) -> None:
        """A point of a scan whose crashed file cannot be continued: said once (WARNING,
        the runner's last_error); the scan's points are then dropped, counted as
        rejected."""
        message = (f"scan {scan_id}: {path} was not resumed: {why}; the scan's points are "
                   f"dropped (restart with the config the file was written with, "
                   f"/entry/process/config, to continue it, or complete it afterwards with "
                   f"`peakstream replay RECORDING --fill {path}`)")
        log.warning("%s", message)
        if self.runner is not None:
            self.runner.last_error = message
            self.runner.refused = scan_id  # its points: counted as rejected, not logged

    def _with_params(self, resumed: Resumed) -> Resumed:
        """The parameters in force at the file's checkpoint set again (its param events)."""
        if self.runner is not None:
            restore_params(resumed, self.runner.params, resumed.start().scan_id)
        return resumed

    def _resumable(self, scan_id: str) -> Path | None:
        """The newest file a crash left open for this scan and config, in the output
        directory or the directories its pattern makes (two levels)."""
        if not self.config["output"]["resume"] or self.output_file is not None:
            return None
        return newest_resumable(self._survey(scan_id), self.config.text())

    def _crashed_with_another_config(self, scan_id: str) -> Path | None:
        """The newest file a crash left open for this scan with another processing config
        (not a file of this config that is not ours to resume: a copy, a link)."""
        if not self.config["output"]["resume"] or self.output_file is not None:
            return None
        mine = processing_hash(self.config.text())
        found = [(c.mtime, c.path) for c in self._survey(scan_id)
                 if c.resumable and mine not in c.continued_with]
        return max(found)[1] if found else None

    def _survey(self, scan_id: str) -> list[Candidate]:
        """The candidate files of this scan id (in name order), each read once per start
        or stray point (`stream.store.resume.survey`)."""
        if self._surveyed is None or self._surveyed[0] != scan_id:
            self._surveyed = (scan_id, survey(sorted(self._candidates(scan_id)), scan_id))
        return self._surveyed[1]

    def _candidates(self, scan_id: str) -> list[Path]:
        """The files of the output directory (two levels) that may be this scan's."""
        # named by the pattern: when it holds the scan id, only those files are opened
        name = (f"*{safe_name(scan_id)}*.h5" if "{scan_id" in self.config["output"]["pattern"]
                else "*.h5")
        return [p for p in output_files(self.output_dir, name) if p not in self.not_resumed]
