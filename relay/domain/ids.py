"""The one bound on ids the relay keeps: SQLite's INTEGER, Quivo's and Bringg's ids all fit a signed int64."""

from typing import Final

MAX_ID: Final = 2**63 - 1
