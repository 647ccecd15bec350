"""Which runs the dashboards show, and which dashboard reads them when.

The window shows one set of runs (several: overlaid) in every centre tab. Only the
visible tab reads: a tab that has not seen the shown runs loads them when it is opened
(``_stale``), one that has but not what they gained since reads only the new rows
(``_behind``), and while the runs grow (``_live``) only the visible tab follows them. A
tab switch never rebuilds a view from scratch. A mixin of ``MainWindow`` (it uses
``tabs``, ``dashboards``, ``controller``, ``live`` and ``runs_panel``).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QFileDialog, QWidget

from ...store import RunFileError, open_run


class RunFollowingMixin:
    """Run routing of ``MainWindow``: runs to dashboards, and who follows them."""

    def _init_following(self) -> None:
        self._shown_runs: list[Path] = []
        self._live = False           # follow the shown runs (they are still growing)
        self._stale: set[int] = set()  # tab indexes that have not seen the shown runs yet
        # Tab indexes showing the right runs but not what they gained since: a visit
        # reads only the new rows (a tab switch must never rebuild a view from scratch).
        self._behind: set[int] = set()

    def add_dashboard(self, widget: QWidget, title: str) -> int:
        """Add a centre tab; it is shown the current runs the first time it is opened."""
        widget.setObjectName(f"dashboard:{title}")
        wants_controller = getattr(widget, "set_training_controller", None)
        if wants_controller is not None:   # e.g. Routing: text through the live weights
            wants_controller(self.controller)
        self.dashboards.append(widget)
        i = self.tabs.addTab(widget, title)
        if self._shown_runs:
            self._stale.add(i)
        return i

    @Slot()
    def open_run_dialog(self) -> None:
        start = str(self.runs_dir if self.runs_dir.exists() else Path.cwd())
        d = QFileDialog.getExistingDirectory(self, "Open run folder", start)
        if d:
            self.open_run_path(d)

    def open_run_path(self, path: str | Path) -> bool:
        """Show the run at ``path`` in the dashboards. A run that cannot be read gives a
        message box with the store's one-line error and changes nothing."""
        try:
            reader = open_run(path)
        except RunFileError as e:
            self._warn("Could not open run", str(e))
            return False
        try:
            status, name, run_dir = reader.status, reader.name, Path(reader.path)
        finally:
            reader.close()
        self.show_runs([run_dir], live=(status == "running"))
        self.statusBar().showMessage(f"Opened run {name} ({status})", 5000)
        return True

    def show_runs(self, paths: list[Path], live: bool = False) -> None:
        """Show ``paths`` in the dashboards (several: overlaid). ``live``: keep polling.
        The runs already shown (a run that just finished, a run checked again) are only
        read on from where each view is, never reloaded."""
        paths = [Path(p) for p in paths]
        same = paths == self._shown_runs
        self._shown_runs = paths
        self._live = live
        last = self.live.last_run_dir
        if not self.controller.busy and last and \
                Path(last) not in self._shown_runs and self.controller.state in \
                ("finished", "stopped", "failed"):
            # "Failed" (or "Finished") belonged to that run, not to the runs now viewed.
            self._clear_run_status()
        for d in self.dashboards:
            d.stop_follow()
        if same:
            self._behind = set(range(self.tabs.count())) - self._stale
        else:
            self._stale = set(range(self.tabs.count()))
            self._behind = set()
        self._sync_current_tab()
        self._update_actions()

    @Slot(int)
    def _on_tab_changed(self, index: int) -> None:
        for i, d in enumerate(self.dashboards):
            if i != index:
                d.stop_follow()  # only the visible dashboard polls the store
        self._sync_current_tab()

    def _sync_current_tab(self) -> None:
        i = self.tabs.currentIndex()
        if i < 0:
            return
        d = self.tabs.widget(i)
        if i in self._stale:
            self._stale.discard(i)
            self._behind.discard(i)
            d.set_runs(list(self._shown_runs))
        elif i in self._behind and not self._live:
            self._behind.discard(i)
            d.refresh()         # only the rows the runs gained since this view last read
        if self._live:
            # Shown at once as it was; its next frame reads what the run gained meanwhile
            # (the catch-up is no part of the switch).
            self._behind.discard(i)
            d.start_follow()

    @Slot(list)
    def _on_runs_checked(self, paths: list) -> None:
        """Checked runs are overlaid; unchecking them all keeps what is shown, unless
        what is shown is checked runs the filter now hides: those leave the views."""
        if not paths:
            hidden = set(self.runs_panel.hidden_checked_runs())
            if self._shown_runs and hidden and all(str(p) in hidden for p in self._shown_runs):
                self.show_runs([])
            return
        live = self.controller.busy and self.controller.run_dir in [str(p) for p in paths]
        self.show_runs([Path(p) for p in paths], live=live)

    def _rescan_runs(self) -> None:
        # The panel also rescans every 2 s by itself; this makes a new or just-ended
        # run show up at once. In the background: a synchronous scan opens every run
        # file in the GUI thread (80-130 ms measured with a few runs on a busy machine).
        panel = self.runs_panel
        scan = (getattr(panel, "rescan_async", None) or getattr(panel, "_rescan_async", None)
                or panel.rescan)
        scan()
