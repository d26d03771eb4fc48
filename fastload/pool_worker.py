"""A worker of ``fastload.parallel``'s pool: ``python -m fastload.pool_worker FD`` (started by the
pool, never by hand). A module of its own, so that running it does not re-run the module the
package has already imported."""

import signal
import sys
from multiprocessing.connection import Connection

from .parallel import worker_main

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us
    worker_main(Connection(int(sys.argv[1])))
