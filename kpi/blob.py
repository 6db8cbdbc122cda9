"""The interaction-data blob's format: what staging and the fake source both name.

Standard library only (the fake source imports it).
"""

from __future__ import annotations

# A blob tells how many sites the user is signed in to under one of these names (the dialog's
# versions differ); staging reads the first present, the fake source writes one of them.
SITES_FIELDS = ("number_sites_logged_in", "sites_signed_in", "number_sites_signed_in")
