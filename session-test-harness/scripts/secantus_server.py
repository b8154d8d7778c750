"""Starts a throwaway secantusdb server for the test harness: standalone, on 127.0.0.1:<port>,
its data in <dir>, expired documents swept every second (the `secantusd-py` command line
sweeps every 60 s and has no option to change it).

Usage: python secantus_server.py <port> <dir> [replica-set-name]
"""

import sys

from secantus.server import SecantusDBServer

port = int(sys.argv[1])
storage = sys.argv[2]
replica_set = sys.argv[3] if len(sys.argv) > 3 else None
server = SecantusDBServer(
    host="127.0.0.1",
    port=port,
    storage_path=storage,
    replica_set_name=replica_set,
    enable_test_commands=False,
    ttl_sweep_seconds=1.0,
    cache_size="128M",
)
server.start()
server.wait()
