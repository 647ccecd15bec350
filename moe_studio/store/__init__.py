"""Run files: one SQLite database per run (WAL), writer, reader, live follow, export.
numpy / pandas / sqlite3 only; never Qt, never torch.

    w = RunWriter.create(runs_dir, name="demo", config=to_dict(cfg), config_toml=dumps(cfg))
    w.add_scalars(step, {"train/loss": 2.1}, member=0)
    w.close("finished")

    r = open_run(w.run_dir)
    r.scalars()            # long DataFrame: step, member, name, value, wall_time
    f = r.follower(); f.poll()   # only what is new since the last poll
    edit_run(w.run_dir, add_tags=["baseline"], note="lr too high")   # the user's, in the run
"""
from .errors import RunFileError
from .follow import Follower, Update
from .reader import RunReader, Snapshot, open_run
from .organise import TrashUnavailable, delete_run, edit_run
from .run_query import matches
from .runs import RunInfo, describe_setup, display_labels, list_runs, run_info
from .schema import SCHEMA_VERSION
from .writer import RunWriter, new_run_id

__all__ = ["RunWriter", "RunReader", "open_run", "list_runs", "run_info", "RunInfo",
           "RunFileError", "SCHEMA_VERSION", "new_run_id", "Snapshot", "Follower", "Update",
           "edit_run", "delete_run", "TrashUnavailable", "matches", "describe_setup", "display_labels"]
