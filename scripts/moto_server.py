"""moto's S3 server with atomic conditional writes: what nmr's
db.type = "s3" tests and benchmark run (docs/s3-conditional-writes.md).

moto 5.2.5 answers `If-None-Match: *` and `If-Match` on PUT, but it checks
the condition and then stores the object with no lock between the two, on a
threaded server: two racing conditional PUTs can both pass the check and
both answer 200. On an idle machine that is rare; under load (a CI build
beside the tests) it happens a few times in a thousand races, and a test of
racing publishers then sees two winners. AWS S3, MinIO, R2 and Ceph decide
conditional writes atomically. This wrapper makes moto behave like them: it
runs every request that changes a key (PUT, DELETE, POST on a key) under
one lock, so a condition is checked and applied with no other change in
between; reads stay concurrent.

Usage: python3 scripts/moto_server.py -H 127.0.0.1 -p PORT
(the arguments of moto_server). Needs `pip install "moto[server]==5.2.5"`.
"""

import sys
import threading

from moto import server
from moto.s3.responses import S3Response

_CHANGES = threading.Lock()

for _name in ("_key_response_put", "_key_response_delete", "_key_response_post"):
    _original = getattr(S3Response, _name)

    def _locked(self, *args, _original=_original, **kwargs):
        with _CHANGES:
            return _original(self, *args, **kwargs)

    setattr(S3Response, _name, _locked)

if __name__ == "__main__":
    server.main(sys.argv[1:])
