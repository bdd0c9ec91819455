"""What an evaluation produced, written for people and tools: ``report.json`` / ``report.md``
(:mod:`~wm_eval.reporting.report`), figures (:mod:`~wm_eval.reporting.plots`) and the paired
episodes in HDF5 (:mod:`~wm_eval.reporting.trajectories`).

Reporting only reads finished results; it never runs an evaluation.
"""

from __future__ import annotations

from wm_eval.reporting.plots import plot_horizon_error, plot_returns, plot_uncertainty, write_plots
from wm_eval.reporting.report import build_report, library_versions, summary_table, write_report
from wm_eval.reporting.trajectories import PairedEpisode, TrajectoryFile, read_trajectories, write_trajectories

__all__ = [
    "build_report", "write_report", "summary_table", "library_versions",
    "plot_returns", "plot_horizon_error", "plot_uncertainty", "write_plots",
    "PairedEpisode", "TrajectoryFile", "write_trajectories", "read_trajectories",
]  # fmt: skip
