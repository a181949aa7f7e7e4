"""Thin Prefect tasks over `splitrec_core`.

The core's progress lines (PSI: IDs hashed and blinded; training: one line per epoch) are INFO
records of the `splitrec_core` logger, which the flows' log shows
(`PREFECT_LOGGING_EXTRA_LOGGERS`).
"""

import logging

logging.getLogger("splitrec_core").setLevel(logging.INFO)
