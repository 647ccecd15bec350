"""Where the setup form's config comes from: a named preset or a TOML file.

A mixin of ``SetupPanel`` (it uses the panel's ``set_config``, ``config``, ``_config``,
``preset_combo``, ``config_path`` and signals): choosing a preset loads it, any edit
shows "Custom" unless the form matches a preset exactly, and TOML files are loaded and
saved with a one-line message when that fails.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from ...config import PRESETS, ConfigError, to_dict
from ...config import toml_io
from ...config.inputs import load as load_config

CUSTOM_PRESET = "Custom"


class SetupLoadSaveMixin:
    """Presets and TOML load/save of ``SetupPanel``."""

    def set_preset(self, name: str) -> None:
        """Load the preset called ``name`` (a key of ``PRESETS``)."""
        self.set_config(PRESETS[name]())
        self.presetChanged.emit(name)

    def current_preset(self) -> str | None:
        """The preset the form matches exactly (ignoring the run name), if any."""
        t = self.preset_combo.currentText()
        return None if t == CUSTOM_PRESET else t

    def load_toml(self, path: str | Path) -> list[str]:
        """Load a TOML config into the form. Raises ConfigError with a readable message."""
        notes = self.set_config(load_config(path))
        self.config_path = str(path)
        self.configFileChanged.emit(str(path))
        return notes

    def save_toml(self, path: str | Path) -> None:
        toml_io.save(self.config(), path)
        self.config_path = str(path)
        self.configFileChanged.emit(str(path))

    # ---------------------------------------------------------------- dialogs
    def _dialog_dir(self) -> str:
        return str(Path(self.config_path).parent) if self.config_path else str(Path.cwd())

    def open_toml_dialog(self) -> bool:
        fn, _ = QFileDialog.getOpenFileName(self.window(), "Open experiment config",
                                            self._dialog_dir(), "TOML config (*.toml);;All files (*)")
        if not fn:
            return False
        try:
            notes = self.load_toml(fn)
        except (ConfigError, OSError) as e:
            QMessageBox.warning(self.window(), "Could not load config", str(e))
            return False
        if notes:
            QMessageBox.information(self.window(), "Config adjusted",
                                    "Some values did not fit their range:\n\n" + "\n".join(notes))
        return True

    def save_toml_dialog(self) -> bool:
        start = self.config_path or str(Path(self._dialog_dir()) / f"{self._config.name or 'experiment'}.toml")
        fn, _ = QFileDialog.getSaveFileName(self.window(), "Save experiment config", start,
                                            "TOML config (*.toml)")
        if not fn:
            return False
        if not Path(fn).suffix:
            fn += ".toml"
        try:
            self.save_toml(fn)
        except OSError as e:
            QMessageBox.warning(self.window(), "Could not save config", f"{fn}: {e.strerror or e}")
            return False
        return True

    def _on_preset_activated(self, index: int) -> None:
        name = self.preset_combo.itemText(index)
        if name in PRESETS:
            self.set_preset(name)

    def _sync_preset_combo(self) -> None:
        mine = to_dict(self._config)
        mine.pop("name", None)
        match = None
        for name, make in PRESETS.items():
            d = to_dict(make())
            d.pop("name", None)
            if d == mine:
                match = name
                break
        # setCurrentText does not emit ``activated``, so this never reloads a preset.
        self.preset_combo.setCurrentText(match or CUSTOM_PRESET)
