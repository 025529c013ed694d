"""`barfed demo`: a whole federation on one machine, through the surfaces a real one uses.

`scenario` runs the numbered steps; the actors are `nodes` (each organization's `barfed node` commands as
processes), `operator` (the REST API) and `user` (`barfed pull`, stock transformers); `profiles` says what is
trained, `progress` shows each organization's live state, `results` the table, the r1→r2 diff and the report.
"""

from barfed.demo.profiles import FULL, ORGS, QUICK, Profile
from barfed.demo.scenario import run_demo

__all__ = ["FULL", "ORGS", "QUICK", "Profile", "run_demo"]
