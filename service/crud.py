"""Every SQL statement lives here. Functions take a keyword-only `session`; they flush, never commit."""

from __future__ import annotations

# ---- keys, datasets, registry reads (owner: service-web) -------------------------------------------


# ---- job lifecycle: create/claim/progress/finish, model versions (owner: worker) ---------------------
