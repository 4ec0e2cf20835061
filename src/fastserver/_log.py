"""fastserver's log: the logger named ``fastserver``, and what it prints where nothing else does.

The supervisor (fastserver.workers) and the command line report through ``logging.getLogger(
"fastserver")``: a worker's start, exit and replacement, a reload, a stop. An application that
configures logging (a handler on the root logger, on ``fastserver`` or between) gets those records
like any other. One that configures none still sees them: the ``fastserver`` logger carries a
handler of its own that writes to ``sys.stderr``, in ``http.server``'s ``log_message`` style::

    fastserver[4242] - - [07/Dec/2026 02:10:00] worker 0 (pid 4243) started

and that stands back (writes nothing) as soon as any other handler would take the record, so a
record is never printed twice. The root logger is never touched. The ``fastserver`` logger's level
is INFO unless the application set one (the lifecycle lines are INFO; failures WARNING or ERROR).
"""

import logging
import sys
import time

NAME = "fastserver"
_MONTHS = (None, "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec")


class _Formatter(logging.Formatter):
    """``name[pid] - - [dd/Mon/yyyy hh:mm:ss] message``: BaseHTTPRequestHandler.log_message's
    shape, the logger's name and the process in place of the client's address."""

    def format(self, record):
        year, month, day, hh, mm, ss, *_ = time.localtime(record.created)
        when = f"{day:02d}/{_MONTHS[month]}/{year:04d} {hh:02d}:{mm:02d}:{ss:02d}"
        line = f"{record.name}[{record.process}] - - [{when}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _FallbackHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment, unless another handler takes the record."""

    def __init__(self):
        super().__init__()
        self.setFormatter(_Formatter())

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass  # always sys.stderr (which tests and applications may replace)

    def handle(self, record):
        if _others(logging.getLogger(record.name), self):
            return False
        return super().handle(record)


def _others(logger, this):
    """Whether a handler other than ``this`` would see a record logged on ``logger``."""
    while logger is not None:
        if any(handler is not this for handler in logger.handlers):
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


def logger():
    """The ``fastserver`` logger, with its fallback handler (added once)."""
    log = logging.getLogger(NAME)
    if not any(isinstance(handler, _FallbackHandler) for handler in log.handlers):
        log.addHandler(_FallbackHandler())
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
    return log
